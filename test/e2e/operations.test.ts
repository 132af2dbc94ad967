/**
 * The operator's endpoints, as a probe, Prometheus or an ingress sees them: our names and the
 * Actuator names on the public port by default, and only on the management listener when
 * MANAGEMENT_PORT is set.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../support/test-app.js';

const get = async (url: string): Promise<{ status: number; type: string; text: string }> => {
  const res = await fetch(url);
  return { status: res.status, type: res.headers.get('content-type') ?? '', text: await res.text() };
};

describe('operations endpoints on the public port (default)', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(() => t.close());

  it('answers the probes under our names and the Actuator names', async () => {
    expect(await t.call('GET', '/health/live')).toMatchObject({ status: 200, body: { status: 'up' } });
    expect(await t.call('GET', '/health/ready')).toMatchObject({ status: 200, body: { status: 'up', checks: { database: 'up', bus: 'up', sendQueue: 'up' } } });
    expect(await t.call('GET', '/actuator/health/liveness')).toMatchObject({ status: 200, body: { status: 'UP' } });
    expect(await t.call('GET', '/actuator/health/readiness')).toMatchObject({
      status: 200,
      body: { status: 'UP', components: { database: { status: 'UP' }, bus: { status: 'UP' }, sendQueue: { status: 'UP' } } },
    });
    expect(await t.call('GET', '/actuator/health')).toMatchObject({
      status: 200,
      body: { status: 'UP', groups: ['liveness', 'readiness'], components: { liveness: { status: 'UP' }, readiness: { status: 'UP' } } },
    });
  });

  it('serves the same Prometheus text on /metrics and /actuator/prometheus', async () => {
    for (const path of ['/metrics', '/actuator/prometheus']) {
      const res = await get(t.url + path);
      expect(res.status).toBe(200);
      expect(res.type).toMatch(/^text\/plain/);
      expect(res.text).toMatch(/^# HELP chat_/m);
    }
  });
});

describe('operations endpoints with MANAGEMENT_PORT', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ MANAGEMENT_PORT: '0' });
  });
  afterAll(() => t.close());

  it('moves probes and metrics to the management listener and off the public port', async () => {
    const management = t.app.managementUrl!;
    expect(management).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(management).not.toBe(t.url);
    for (const path of ['/health/live', '/health/ready', '/actuator/health', '/actuator/health/readiness', '/metrics', '/actuator/prometheus']) {
      expect((await get(management + path)).status, `${path} on the management port`).toBe(200);
      expect((await get(t.url + path)).status, `${path} on the public port`).toBe(404);
    }
    // The public port still serves the API and the web page; the management port serves nothing else.
    expect((await get(t.url + '/')).status).toBe(200);
    expect((await get(management + '/')).status).toBe(404);
    expect((await get(management + '/api/chat/sessions')).status).toBe(404);
  });
});
