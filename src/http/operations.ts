/**
 * The operator's endpoints: probes and metrics, under our own names (`/health/live`,
 * `/health/ready`, `/metrics`) and under the Spring Boot Actuator names that Kubernetes manifests,
 * dashboards and runbooks written for the original design expect (`/actuator/health` with its
 * `liveness` and `readiness` groups, `/actuator/prometheus`).
 *
 * They are served on the public port unless MANAGEMENT_PORT moves them to a listener of their own
 * (`buildManagementServer`), which the ingress never routes to.
 */
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { Metrics } from '../observability/metrics.js';

/** Each dependency readiness depends on, and whether it is fit to serve now. */
export type ReadinessChecks = Record<string, 'up' | 'down'>;

export interface OperationsDeps {
  metrics: Metrics;
  /** Never rejects: a check that cannot be made is 'down'. */
  readiness: () => Promise<ReadinessChecks>;
}

/** Registers the probes and metrics routes on `app`. */
export function registerOperations(app: FastifyInstance, deps: OperationsDeps): void {
  const metrics = async (): Promise<{ type: string; body: string }> => ({ type: deps.metrics.registry.contentType, body: await deps.metrics.registry.metrics() });
  const readiness = async (): Promise<{ ready: boolean; checks: ReadinessChecks }> => {
    const checks = await deps.readiness();
    return { ready: Object.values(checks).every((state) => state === 'up'), checks };
  };
  const actuatorComponents = (checks: ReadinessChecks): Record<string, { status: 'UP' | 'DOWN' }> =>
    Object.fromEntries(Object.entries(checks).map(([name, state]) => [name, { status: state === 'up' ? ('UP' as const) : ('DOWN' as const) }]));

  // Liveness says only that the process answers: restarting it cures none of readiness's causes
  // (a database or broker away, a drain), and would turn an outage into a restart storm.
  app.get('/health/live', async () => ({ status: 'up' }));
  app.get('/health/ready', async (_request, reply) => {
    const { ready, checks } = await readiness();
    return reply.code(ready ? 200 : 503).send({ status: ready ? 'up' : 'down', checks });
  });
  app.get('/metrics', async (_request, reply) => {
    const { type, body } = await metrics();
    return reply.type(type).send(body);
  });

  app.get('/actuator/health', async (_request, reply) => {
    const { ready, checks } = await readiness();
    const status = ready ? 'UP' : 'DOWN';
    return reply.code(ready ? 200 : 503).send({
      status,
      components: { liveness: { status: 'UP' }, readiness: { status, components: actuatorComponents(checks) } },
      groups: ['liveness', 'readiness'],
    });
  });
  app.get('/actuator/health/liveness', async () => ({ status: 'UP' }));
  app.get('/actuator/health/readiness', async (_request, reply) => {
    const { ready, checks } = await readiness();
    return reply.code(ready ? 200 : 503).send({ status: ready ? 'UP' : 'DOWN', components: actuatorComponents(checks) });
  });
  app.get('/actuator/prometheus', async (_request, reply) => {
    const { type, body } = await metrics();
    return reply.type(type).send(body);
  });
}

/** The listener of MANAGEMENT_PORT: probes and metrics only, nothing a client may call. */
export function buildManagementServer(deps: OperationsDeps & { logger: Logger }): FastifyInstance {
  const app = Fastify({
    loggerInstance: deps.logger.child({ component: 'management' }) as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
  });
  registerOperations(app as unknown as FastifyInstance, deps);
  return app as unknown as FastifyInstance;
}
