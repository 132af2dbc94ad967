/**
 * The HTTP API (README, "HTTP API"): Fastify routes that authenticate, translate and hand over to the chat
 * service. No business rules here.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import cors from '@fastify/cors';
import { Ajv } from 'ajv';
import type { Static, TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { Logger } from 'pino';
import { ChatError } from '../chat/chat-errors.js';
import type { ChatService } from '../chat/chat-service.js';
import type { PresenceService } from '../chat/presence.js';
import type { SendPath } from '../chat/send-path.js';
import { findMalformedText } from '../chat/text-rules.js';
import { requireDisplayName, requireEmail } from '../chat/validation.js';
import type { TokenVerifier } from '../auth/token-verifier.js';
import type { Caller } from '../chat/caller.js';
import type { DevTokenIssuer } from '../auth/dev-token-issuer.js';
import type { Metrics } from '../observability/metrics.js';
import type { UserRateLimiter } from '../limits/user-rate-limiter.js';
import { httpProblem, sendProblem } from './problem-details.js';
import { contextFrom, inSpan } from '../observability/tracing.js';
import webPage from './web-page.js';
import { registerOperations, type ReadinessChecks } from './operations.js';
import { registerAdminRoutes, type AdminDeps } from './admin-routes.js';
import {
  ChatMessageBody,
  DevTokenBody,
  EditMessageBody,
  HistoryQuery,
  InitChatBody,
  LegacyHistoryQuery,
  LegacyUnreadQuery,
  ReportBody,
  MessageParams,
  SeenBody,
  SessionParams,
  SyncQuery,
  UnreadQuery,
} from './schemas.js';

const BODY_LIMIT_BYTES = 64 * 1024;

export interface HttpServerDeps {
  chat: ChatService;
  /** Answers GET /api/chat/{id}/presence. */
  presence: Pick<PresenceService, 'peerPresence'>;
  /** The /admin routes (tokens with the chat:admin scope). */
  admin: AdminDeps;
  /** Where sends are stored: the same path STOMP sends take. */
  sends: SendPath;
  verifier: TokenVerifier;
  /** Each authenticated /api request takes one unit of its caller's budget. */
  requestLimiter: UserRateLimiter;
  /** Each send takes one unit of its sender's send budget, the one STOMP sends take from too. */
  sendLimiter: UserRateLimiter;
  /** Present only in the embedded default: enables POST /dev/token. */
  devIssuer?: DevTokenIssuer;
  metrics: Metrics;
  logger: Logger;
  allowedOrigins: readonly string[];
  /** Sees every raw request first and returns true for those it answered itself (the SockJS endpoint). */
  interceptRequest?: (req: IncomingMessage, res: ServerResponse) => boolean;
  /** Which peers' X-Forwarded-For to believe for request.ip (TRUST_PROXY); none when absent. */
  trustProxy?: (address: string, hop: number) => boolean;
  /** Each dependency needed to serve, up or down; never rejects. */
  readiness: () => Promise<ReadinessChecks>;
  /** False when a management listener serves the probes and metrics instead. Default true. */
  serveOperations?: boolean;
}

declare module 'fastify' {
  interface FastifyRequest {
    caller?: Caller;
  }
}

export function buildHttpServer(deps: HttpServerDeps): FastifyInstance {
  const app = Fastify({
    loggerInstance: deps.logger.child({ component: 'http' }) as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: BODY_LIMIT_BYTES,
    trustProxy: deps.trustProxy ?? false,
    requestIdHeader: 'x-request-id',
    serverFactory: (handler) =>
      http.createServer((req, res) => {
        if (!deps.interceptRequest?.(req, res)) handler(req, res);
      }),
  }).withTypeProvider<TypeBoxTypeProvider>();

  // Query strings and paths are text and need coercion to their declared types; a JSON body must
  // already carry the right types ({"content": 42} is an error, not the string "42").
  const coercing = new Ajv({ coerceTypes: 'array', allErrors: false, strict: false });
  const exact = new Ajv({ coerceTypes: false, allErrors: false, strict: false });
  app.setValidatorCompiler(({ schema, httpPart }) => (httpPart === 'body' ? exact : coercing).compile(schema));
  // Only JSON is spoken; anything else is a 415 rather than a string body that fails validation.
  app.removeContentTypeParser(['text/plain']);

  const anyOrigin = deps.allowedOrigins.includes('*');
  void app.register(cors, {
    origin: anyOrigin ? true : [...deps.allowedOrigins],
    methods: ['GET', 'POST', 'PATCH', 'DELETE'],
    allowedHeaders: ['authorization', 'content-type', 'x-request-id'],
    maxAge: 600,
  });

  app.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url ?? 'unmatched';
    deps.metrics.httpDuration.observe({ method: request.method, route, status: String(reply.statusCode) }, reply.elapsedTime / 1000);
    if (reply.statusCode >= 500) request.log.warn({ route, status: reply.statusCode, ms: reply.elapsedTime }, 'request failed');
    else request.log.debug({ route, status: reply.statusCode, ms: reply.elapsedTime }, 'request');
  });

  // Before any schema or rule sees them: a NUL or lone surrogate anywhere in the body, the query or
  // the path is refused as such, so no malformed string can reach SQL through a field we forgot.
  app.addHook('preValidation', async (request) => {
    const field = findMalformedText(request.body, '') ?? findMalformedText(request.query, '') ?? findMalformedText(request.params, '');
    if (field !== undefined) {
      throw new ChatError('INVALID_CONTENT', `${field || 'request'} must be well-formed Unicode text (no NUL, no lone surrogate)`, { field: field || undefined });
    }
  });

  app.setErrorHandler((err, request, reply) => {
    const problem = httpProblem(err);
    if (problem.code === 'INTERNAL') request.log.error({ err }, 'unhandled error');
    return sendProblem(reply, request, problem);
  });
  app.setNotFoundHandler((request, reply) => sendProblem(reply, request, httpProblem(new ChatError('ROUTE_NOT_FOUND', `no route ${request.method} ${request.url.split('?')[0]}`))));

  const authenticate = async (request: FastifyRequest): Promise<void> => {
    const header = request.headers.authorization;
    const match = typeof header === 'string' ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
    if (!match) throw new ChatError('UNAUTHENTICATED', 'send Authorization: Bearer <token>');
    request.caller = (await deps.verifier.verify(match[1]!)).caller;
    // After verification: the budget belongs to a proven identity, not to whatever a token claims.
    await deps.requestLimiter.take(request.caller.email);
  };
  const caller = (request: FastifyRequest): Caller => {
    if (!request.caller) throw new ChatError('UNAUTHENTICATED');
    return request.caller;
  };

  void app.register(
    async (plugin) => {
      const api = plugin.withTypeProvider<TypeBoxTypeProvider>();
      api.addHook('onRequest', authenticate);

      api.post('/chat/init', { schema: { body: InitChatBody } }, async (request) => deps.chat.initSession(caller(request), request.body));

      const send = async (request: FastifyRequest<{ Body: Static<typeof ChatMessageBody> }>, reply: FastifyReply) => {
        await deps.sendLimiter.take(caller(request).email);
        // No connection: REST answers with the stored message, so an outage is a 503 to retry, not a queued send.
        // A caller that traces (a gateway, another service) continues its trace through the send.
        const outcome = await inSpan('chat.send', { 'chat.transport': 'http' }, () => deps.sends.send(caller(request), request.body, { transport: 'http' }), contextFrom(request.headers));
        if (outcome.kind === 'queued') throw new ChatError('INTERNAL', 'a REST send was queued');
        return reply.code(outcome.kind === 'stored' ? 201 : 200).send(outcome.message);
      };
      api.post('/chat/message', { schema: { body: ChatMessageBody } }, send);
      api.post('/chat/send', { schema: { body: ChatMessageBody } }, send);

      api.get('/chat/:sessionId/history', { schema: { params: SessionParams, querystring: HistoryQuery } }, async (request) =>
        deps.chat.history(caller(request), request.params.sessionId, request.query),
      );
      api.get('/chat/history', { schema: { querystring: LegacyHistoryQuery } }, async (request) =>
        deps.chat.historyByPage(caller(request), request.query.chatId, request.query.page ?? 1, request.query.size ?? 50),
      );

      api.get('/chat/:sessionId/unread', { schema: { params: SessionParams, querystring: UnreadQuery } }, async (request) =>
        deps.chat.unread(caller(request), request.params.sessionId, request.query),
      );
      api.get('/chat/unread', { schema: { querystring: LegacyUnreadQuery } }, async (request) =>
        deps.chat.unread(caller(request), request.query.chatId, request.query),
      );

      api.post('/chat/:sessionId/seen', { schema: { params: SessionParams, body: SeenBody } }, async (request) =>
        deps.chat.markSeen(caller(request), request.params.sessionId, request.body.upToSeq),
      );

      // An edit or delete takes from the send budget: each one is an event to both participants.
      api.patch('/chat/:sessionId/messages/:messageId', { schema: { params: MessageParams, body: EditMessageBody } }, async (request) => {
        const { body, params } = request;
        for (const field of ['sessionId', 'messageId'] as const) {
          if (body[field] !== undefined && body[field].toLowerCase() !== params[field].toLowerCase()) {
            throw new ChatError('VALIDATION_FAILED', `${field} in the body must be the one in the path`, { field });
          }
        }
        await deps.sendLimiter.take(caller(request).email);
        return deps.chat.editMessage(caller(request), { ...params, content: body.content });
      });
      // A DELETE has no body; some clients still say it is JSON, and an empty JSON body is not JSON.
      const emptyBodyIsNoBody = async (request: FastifyRequest): Promise<void> => {
        if (request.headers['transfer-encoding'] === undefined && Number(request.headers['content-length'] ?? 0) === 0) delete request.headers['content-type'];
      };
      api.delete('/chat/:sessionId/messages/:messageId', { schema: { params: MessageParams }, onRequest: emptyBodyIsNoBody }, async (request) => {
        await deps.sendLimiter.take(caller(request).email);
        return deps.chat.deleteMessage(caller(request), request.params);
      });

      api.get('/chat/sync', { schema: { querystring: SyncQuery } }, async (request) => deps.chat.sync(caller(request), request.query));
      api.get('/chat/:sessionId/presence', { schema: { params: SessionParams } }, async (request) =>
        deps.presence.peerPresence(caller(request), request.params.sessionId),
      );

      api.get('/chat/sessions', async (request) => ({ sessions: await deps.chat.listSessions(caller(request)) }));
      api.get('/chat/unread-count', async (request) => deps.chat.unreadCount(caller(request)));

      void api.register(async (scope) => {
        // Block and unblock take no body; one a client sends anyway (often an empty one labelled
        // JSON, which Fastify's parser refuses) is ignored rather than failing the request.
        scope.removeContentTypeParser('application/json');
        scope.addContentTypeParser('application/json', { parseAs: 'string' }, (_request, _body, done) => done(null, undefined));
        const blocks = scope.withTypeProvider<TypeBoxTypeProvider>();
        blocks.post('/chat/:sessionId/block', { schema: { params: SessionParams } }, async (request) =>
          deps.chat.setBlocked(caller(request), request.params.sessionId, true),
        );
        blocks.delete('/chat/:sessionId/block', { schema: { params: SessionParams } }, async (request) =>
          deps.chat.setBlocked(caller(request), request.params.sessionId, false),
        );
      });
      api.post('/chat/:sessionId/report', { schema: { params: SessionParams, body: ReportBody } }, async (request, reply) =>
        reply.code(202).send(await deps.chat.report(caller(request), request.params.sessionId, request.body)),
      );
    },
    { prefix: '/api' },
  );

  void app.register(async (plugin) => registerAdminRoutes(plugin as unknown as FastifyInstance, deps.admin, authenticate), { prefix: '/admin' });

  const devIssuer = deps.devIssuer;
  if (devIssuer) {
    app.post('/dev/token', { schema: { body: DevTokenBody } }, async (request) => {
      const email = requireEmail('email', request.body.email);
      const displayName = request.body.displayName === undefined ? undefined : requireDisplayName('displayName', request.body.displayName);
      return devIssuer.issue(email, displayName || undefined, undefined, request.body.scope);
    });
  }

  // With MANAGEMENT_PORT they live on their own listener, out of the ingress's reach.
  if (deps.serveOperations !== false) registerOperations(app as unknown as FastifyInstance, { metrics: deps.metrics, readiness: deps.readiness });

  void app.register(webPage);
  return app as unknown as FastifyInstance;
}
