/**
 * deploy/grafana and deploy/prometheus use only metrics the service exports: every metric name in
 * every PromQL expression is checked against the series the service's own registry produces
 * (src/observability/metrics.ts with prom-client's Node.js defaults, and the profile directory's
 * when it calls the profile service), so a renamed metric breaks
 * this test instead of a dashboard nobody looks at until an incident.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parse } from 'yaml';
import { beforeAll, describe, expect, it } from 'vitest';
import { generateKeyPairSync } from 'node:crypto';
import { pino } from 'pino';
import { Metrics } from '../../src/observability/metrics.js';
import { HttpProfileDirectory } from '../../src/profiles/http-profile-directory.js';
import { DEPLOY } from './deploy-support.js';

const KEYWORDS = new Set(['and', 'or', 'unless', 'bool', 'offset', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'inf', 'nan']);

/** The metric names a PromQL expression reads: identifiers that are not functions, keywords or labels. */
function metricNames(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, '')
    .replace(/\[[^\]]*\]/g, '')
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, '');
  return [...bare.matchAll(/(?<![\w.$:])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()/g)].map((m) => m[1]!).filter((name) => !KEYWORDS.has(name.toLowerCase()));
}

/** Every series name the service exposes: histograms as their _bucket, _sum and _count. */
async function exportedSeries(): Promise<Set<string>> {
  const registry = new Metrics().registry;
  // The profile service's metrics (cache, breaker) join the registry when PROFILE_SERVICE_URL is set.
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  new HttpProfileDirectory({
    baseUrl: 'http://profiles.invalid',
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    issuer: 'chat-service',
    audience: 'profile-service',
    cacheTtlMs: 60_000,
    cacheMax: 10,
    logger: pino({ level: 'silent' }),
    registry,
  });
  const metrics = await registry.getMetricsAsJSON();
  const series = new Set<string>();
  for (const { name, type } of metrics) {
    series.add(name);
    if (String(type) === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) series.add(name + suffix);
    if (String(type) === 'summary') for (const suffix of ['_sum', '_count']) series.add(name + suffix);
  }
  return series;
}

interface Panel {
  id: number;
  type: string;
  title: string;
  targets?: { expr: string; refId: string }[];
  gridPos: { h: number; w: number; x: number; y: number };
}

const dashboard = JSON.parse(readFileSync(path.join(DEPLOY, 'grafana/chat-service.json'), 'utf8')) as {
  uid: string;
  title: string;
  panels: Panel[];
  templating: { list: { name: string; type: string; query: string | { query: string } }[] };
};
const alerts = parse(readFileSync(path.join(DEPLOY, 'prometheus/alerts.yml'), 'utf8')) as {
  groups: { name: string; rules: { alert: string; expr: string; for: string; labels: { severity: string }; annotations: { summary: string; description: string } }[] }[];
};

describe('dashboard and alerts', () => {
  let series: Set<string>;
  beforeAll(async () => {
    series = await exportedSeries();
  });

  it('the metric-name extraction finds names and only names', () => {
    expect(metricNames('histogram_quantile(0.99, sum by (le) (rate(chat_outbox_publish_lag_seconds_bucket{job=~"$job"}[5m]))) > 5')).toEqual(['chat_outbox_publish_lag_seconds_bucket']);
    expect(metricNames('sum(rate(a_total{status=~"5.."}[5m])) / clamp_min(sum(rate(b_total[5m])), 1e-9) > 0.05 and on(instance) c')).toEqual(['a_total', 'b_total', 'c']);
    expect(series.has('chat_http_request_duration_seconds_bucket')).toBe(true);
    expect(series.has('nodejs_eventloop_lag_p99_seconds')).toBe(true);
    expect(series.has('chat_stomp_connections')).toBe(false);
  });

  it('every dashboard query reads only exported metrics', () => {
    const exprs = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr })));
    expect(exprs.length).toBeGreaterThan(15);
    for (const { panel, expr } of exprs) {
      const names = metricNames(expr);
      expect(names.length, `${panel}: ${expr}`).toBeGreaterThan(0);
      for (const name of names) expect(series.has(name), `${panel}: ${name}`).toBe(true);
    }
    for (const variable of dashboard.templating.list.filter((v) => v.type === 'query')) {
      const query = typeof variable.query === 'string' ? variable.query : variable.query.query;
      const metric = /label_values\((\w+),/.exec(query)![1]!;
      expect(series.has(metric), `variable ${variable.name}: ${metric}`).toBe(true);
    }
  });

  it('the dashboard is well formed: unique ids, every graph has a query, on the datasource variable', () => {
    expect(dashboard.uid).toBe('chat-service');
    const ids = dashboard.panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const panel of dashboard.panels) {
      expect(panel.gridPos.w, panel.title).toBeGreaterThan(0);
      expect(panel.gridPos.x + panel.gridPos.w, panel.title).toBeLessThanOrEqual(24);
      if (panel.type !== 'row') expect(panel.targets?.length, panel.title).toBeGreaterThan(0);
    }
    expect(dashboard.templating.list.map((v) => v.name)).toEqual(['datasource', 'job']);
  });

  it('every alert reads only exported metrics, waits before firing, and says what it means', () => {
    const rules = alerts.groups.flatMap((g) => g.rules);
    for (const rule of rules) {
      const names = metricNames(rule.expr);
      expect(names.length, rule.alert).toBeGreaterThan(0);
      for (const name of names) expect(series.has(name), `${rule.alert}: ${name}`).toBe(true);
      expect(rule.for, rule.alert).toMatch(/^\d+[smh]$/);
      expect(['critical', 'warning', 'info'], rule.alert).toContain(rule.labels.severity);
      expect(rule.annotations.summary, rule.alert).toBeTruthy();
      expect(rule.annotations.description, rule.alert).toBeTruthy();
    }
    expect(new Set(rules.map((r) => r.alert)).size).toBe(rules.length);
  });

  it('alerts cover outbox lag and dead rows, the profile service, the error rate and event-loop lag', () => {
    const reads = (metric: string): boolean => alerts.groups.flatMap((g) => g.rules).some((r) => metricNames(r.expr).includes(metric));
    expect(reads('chat_outbox_publish_lag_seconds_bucket')).toBe(true);
    expect(alerts.groups.flatMap((g) => g.rules).some((r) => /chat_outbox_rows\{state="dead"\}/.test(r.expr))).toBe(true);
    expect(alerts.groups.flatMap((g) => g.rules).some((r) => /route="\/api\/chat\/init",status="503"/.test(r.expr))).toBe(true);
    expect(alerts.groups.flatMap((g) => g.rules).some((r) => /status=~"5\.\."/.test(r.expr))).toBe(true);
    expect(reads('nodejs_eventloop_lag_p99_seconds')).toBe(true);
  });

  it('the prometheus-adapter rule reads an exported metric', () => {
    const rules = parse(readFileSync(path.join(DEPLOY, 'k8s/prometheus-adapter-rules.yaml'), 'utf8')) as { rules: { custom: { seriesQuery: string }[] } };
    for (const rule of rules.rules.custom) for (const name of metricNames(rule.seriesQuery)) expect(series.has(name), name).toBe(true);
  });
});
