/**
 * The operators' API under /admin (README, "Admin API"): dead outbox rows and dead sends (look,
 * replay), connections across the cluster, closing a user's connections everywhere, and the reports
 * participants made. Every
 * route needs a token with the `chat:admin` scope (401 without a token, 403 FORBIDDEN_SCOPE without
 * the scope), and every call is logged at INFO with the admin's identity, before it acts.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { ChatError } from '../chat/chat-errors.js';
import type { Caller } from '../chat/caller.js';
import type { ClusterConnections } from '../chat/presence.js';
import type { MessageStore, OutboxStore, SendQueue } from '../chat/ports.js';
import { requireEmail, requireUuid } from '../chat/validation.js';

export const ADMIN_SCOPE = 'chat:admin';

export interface AdminDeps {
  outbox: Pick<OutboxStore, 'listDead' | 'replayDead'>;
  sendQueue: Pick<SendQueue, 'listDead' | 'replayDead'>;
  reports: Pick<MessageStore, 'listReports'>;
  connections(): Promise<ClusterConnections>;
  disconnect(email: string, by: string): Promise<void>;
}

const ListQuery = Type.Object(
  { limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })), after: Type.Optional(Type.String({ pattern: '^[0-9]{1,18}$' })) },
  { additionalProperties: false },
);
const LimitQuery = Type.Object({ limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })) }, { additionalProperties: false });
const ReportsQuery = Type.Object(
  { limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })), before: Type.Optional(Type.String({ maxLength: 64 })) },
  { additionalProperties: false },
);
const IdParams = Type.Object({ id: Type.String({ maxLength: 64 }) });
const EmailParams = Type.Object({ email: Type.String({ maxLength: 320 }) });

/**
 * Registers the routes on `app` (already prefixed /admin); `authenticate` sets `request.caller`
 * from the bearer token, or throws UNAUTHENTICATED.
 */
export function registerAdminRoutes(app: FastifyInstance, deps: AdminDeps, authenticate: (request: FastifyRequest) => Promise<void>): void {
  const admin = app.withTypeProvider<TypeBoxTypeProvider>();
  admin.addHook('onRequest', async (request) => {
    await authenticate(request);
    if (!request.caller?.scopes?.includes(ADMIN_SCOPE)) {
      request.log.warn({ user: request.caller?.email, route: request.routeOptions.url }, 'admin route refused: no chat:admin scope');
      throw new ChatError('FORBIDDEN_SCOPE', `this route needs a token with the ${ADMIN_SCOPE} scope`);
    }
  });
  /** The admin and what they did, before it is done: a failed action is on record too. */
  const audit = (request: FastifyRequest, action: string, detail: Record<string, unknown> = {}): Caller => {
    const caller = request.caller!;
    request.log.info({ admin: caller.email, action, ...detail }, 'admin action');
    return caller;
  };

  admin.get('/outbox/dead', { schema: { querystring: ListQuery } }, async (request) => {
    audit(request, 'outbox.dead.list');
    const rows = await deps.outbox.listDead(request.query.limit ?? 100, request.query.after);
    return { rows: rows.map((r) => ({ ...r, createdAt: r.createdAt.toISOString() })) };
  });

  admin.post('/outbox/dead/:id/replay', { schema: { params: IdParams } }, async (request, reply) => {
    audit(request, 'outbox.dead.replay', { outboxId: request.params.id });
    if (!(await deps.outbox.replayDead(request.params.id))) throw new ChatError('DEAD_LETTER_NOT_FOUND', `no dead outbox row ${request.params.id}`);
    return reply.code(202).send({ id: request.params.id, replayed: true });
  });

  admin.get('/sends/dead', { schema: { querystring: LimitQuery } }, async (request) => {
    audit(request, 'sends.dead.list');
    const sends = await deps.sendQueue.listDead(request.query.limit ?? 100);
    return { sends: sends.map((s) => ({ ...s, deadAt: s.deadAt?.toISOString() ?? null })) };
  });

  admin.post('/sends/dead/replay', { schema: { querystring: LimitQuery } }, async (request, reply) => {
    audit(request, 'sends.dead.replay');
    const replayed = await deps.sendQueue.replayDead(request.query.limit ?? 1000);
    request.log.info({ admin: request.caller!.email, action: 'sends.dead.replay', replayed }, 'admin action done');
    return reply.code(202).send({ replayed });
  });

  admin.get('/connections', async (request) => {
    audit(request, 'connections.list');
    return deps.connections();
  });

  admin.get('/reports', { schema: { querystring: ReportsQuery } }, async (request) => {
    audit(request, 'reports.list');
    const limit = request.query.limit ?? 100;
    const before = request.query.before === undefined ? undefined : requireUuid('before', request.query.before);
    const reports = await deps.reports.listReports(limit, before);
    return {
      reports: reports.map((r) => ({
        reportId: r.id,
        sessionId: r.sessionId,
        reporterEmail: r.reporterEmail,
        messageId: r.messageId,
        reason: r.reason,
        content: r.content,
        createdAt: r.createdAt.toISOString(),
      })),
      // Pass as `before` for the next (older) page; null when this one was the last.
      next: reports.length === limit ? reports[reports.length - 1]!.id : null,
    };
  });

  admin.post('/users/:email/disconnect', { schema: { params: EmailParams } }, async (request, reply) => {
    const email = requireEmail('email', request.params.email);
    const caller = audit(request, 'user.disconnect', { user: email });
    await deps.disconnect(email, caller.email);
    return reply.code(202).send({ email, disconnecting: true });
  });
}
