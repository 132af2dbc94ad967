/**
 * deploy/k8s: both overlays render with kustomize (kubectl's built-in one) and every object they
 * produce is valid against the Kubernetes API schemas, twice over: kubernetes-models' validators
 * (types, formats, required fields, generated from the OpenAPI spec) and its TypeScript interfaces
 * (which also refuse a field the API does not have, e.g. a misspelt probe, which the validators let
 * through). Then the properties the deployment depends on, which no schema knows.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import ts from 'typescript';
import { parse, parseAllDocuments } from 'yaml';
import { describe, expect, it } from 'vitest';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { Secret } from 'kubernetes-models/v1/Secret';
import { Service } from 'kubernetes-models/v1/Service';
import { ServiceAccount } from 'kubernetes-models/v1/ServiceAccount';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import { Ingress } from 'kubernetes-models/networking.k8s.io/v1/Ingress';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy';
import { CONFIG_VARIABLES } from '../../src/config/config.js';
import { DEPLOY, missingTool, ROOT } from './deploy-support.js';

const kubectlMissing = missingTool('kubectl', ['version', '--client'], 'kubectl carries kustomize; the node-svc machine image has it');
if (kubectlMissing) console.warn(`\n*** SKIPPING the Kubernetes manifest tests: ${kubectlMissing} ***\n`);

type K8sObject = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> }; [key: string]: any };

/** Each kind the manifests may use: its validating model, and the module and interface of its type. */
const MODELS: Record<string, { model: new (data: any) => { validate(): void }; module: string; type: string }> = {
  'v1/ConfigMap': { model: ConfigMap, module: 'kubernetes-models/v1/ConfigMap', type: 'IConfigMap' },
  'v1/Secret': { model: Secret, module: 'kubernetes-models/v1/Secret', type: 'ISecret' },
  'v1/Service': { model: Service, module: 'kubernetes-models/v1/Service', type: 'IService' },
  'v1/ServiceAccount': { model: ServiceAccount, module: 'kubernetes-models/v1/ServiceAccount', type: 'IServiceAccount' },
  'apps/v1/Deployment': { model: Deployment, module: 'kubernetes-models/apps/v1/Deployment', type: 'IDeployment' },
  'autoscaling/v2/HorizontalPodAutoscaler': { model: HorizontalPodAutoscaler, module: 'kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler', type: 'IHorizontalPodAutoscaler' },
  'policy/v1/PodDisruptionBudget': { model: PodDisruptionBudget, module: 'kubernetes-models/policy/v1/PodDisruptionBudget', type: 'IPodDisruptionBudget' },
  'networking.k8s.io/v1/Ingress': { model: Ingress, module: 'kubernetes-models/networking.k8s.io/v1/Ingress', type: 'IIngress' },
  'networking.k8s.io/v1/NetworkPolicy': { model: NetworkPolicy, module: 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy', type: 'INetworkPolicy' },
};

const EXPECTED_KINDS = ['ConfigMap', 'Deployment', 'HorizontalPodAutoscaler', 'Ingress', 'NetworkPolicy', 'PodDisruptionBudget', 'Service', 'ServiceAccount'];

/** The service's drain deadline on SIGTERM (SHUTDOWN_TIMEOUT_MS), which the grace period must outlast. */
const DRAIN_DEADLINE_SEC = 20;

function render(overlay: string): K8sObject[] {
  const out = execFileSync('kubectl', ['kustomize', path.join(DEPLOY, 'k8s/overlays', overlay)], { encoding: 'utf8', timeout: 60_000 });
  return parseAllDocuments(out).map((doc) => {
    if (doc.errors.length > 0) throw new Error(doc.errors.join('\n'));
    return doc.toJS() as K8sObject;
  });
}

const secretTemplate = (): K8sObject => parse(readFileSync(path.join(DEPLOY, 'k8s/secret.template.yaml'), 'utf8')) as K8sObject;

/**
 * Type-checks each object as an object literal `satisfies` its interface, in memory: TypeScript's
 * excess-property check is the strict schema check (unknown fields) the validators do not do.
 */
function typeErrors(objects: readonly K8sObject[]): string[] {
  const file = path.join(ROOT, 'test/deploy/__rendered_manifests__.ts');
  const imports = new Set<string>();
  const lines = objects.map((object, i) => {
    const entry = MODELS[`${object.apiVersion}/${object.kind}`]!;
    imports.add(`import type { ${entry.type} } from '${entry.module}';`);
    return `export const o${i} = ${JSON.stringify(object)} satisfies ${entry.type};`;
  });
  const source = [...imports, ...lines].join('\n');
  const options: ts.CompilerOptions = {
    module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext, target: ts.ScriptTarget.ES2022,
    strict: true, noEmit: true, skipLibCheck: true, types: [],
  };
  const host = ts.createCompilerHost(options);
  const { getSourceFile, fileExists, readFile } = host;
  host.getSourceFile = (name, version, ...rest) =>
    name === file ? ts.createSourceFile(name, source, version) : getSourceFile.call(host, name, version, ...rest);
  host.fileExists = (name) => name === file || fileExists.call(host, name);
  host.readFile = (name) => (name === file ? source : readFile.call(host, name));
  const program = ts.createProgram([file], options, host);
  return ts.getPreEmitDiagnostics(program).map((d) => {
    const text = ts.flattenDiagnosticMessageText(d.messageText, '\n');
    const at = d.file && d.start !== undefined ? d.file.getLineAndCharacterOfPosition(d.start) : undefined;
    const object = at ? objects[at.line - imports.size] : undefined;
    return `${object ? `${object.kind}/${object.metadata.name}: ` : ''}${text}`;
  });
}

const byKind = (objects: readonly K8sObject[], kind: string): K8sObject[] => objects.filter((o) => o.kind === kind);
const one = (objects: readonly K8sObject[], kind: string): K8sObject => {
  const found = byKind(objects, kind);
  expect(found, kind).toHaveLength(1);
  return found[0]!;
};
const matches = (selector: Record<string, string>, labels: Record<string, string>): boolean =>
  Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels[k] === v);
const known = new Set<string>(CONFIG_VARIABLES);

describe.skipIf(!!kubectlMissing)(`Kubernetes manifests${kubectlMissing ? ` (skipped: ${kubectlMissing})` : ''}`, () => {
  const overlays = { dev: [] as K8sObject[], prod: [] as K8sObject[] };

  it('both overlays render, with every expected kind, in their namespace', () => {
    for (const name of ['dev', 'prod'] as const) {
      overlays[name] = render(name);
      expect([...new Set(overlays[name].map((o) => o.kind))].sort(), name).toEqual(EXPECTED_KINDS);
      for (const o of overlays[name]) expect(o.metadata.namespace, `${name} ${o.kind}`).toBe(name === 'dev' ? 'chat-dev' : 'chat');
    }
  }, 120_000);

  it('every object, and the Secret template, passes the Kubernetes schema validators', () => {
    for (const object of [...overlays.dev, ...overlays.prod, secretTemplate()]) {
      const entry = MODELS[`${object.apiVersion}/${object.kind}`];
      expect(entry, `${object.apiVersion} ${object.kind} has a model`).toBeDefined();
      expect(() => new entry!.model(object).validate(), `${object.kind}/${object.metadata.name}`).not.toThrow();
    }
  });

  it('no object has a field the Kubernetes API does not know, and a misspelt one would be caught', () => {
    expect(typeErrors([...overlays.dev, ...overlays.prod, secretTemplate()])).toEqual([]);
    const deployment = structuredClone(one(overlays.prod, 'Deployment'));
    deployment.spec.template.spec.containers[0].livenessProbee = deployment.spec.template.spec.containers[0].livenessProbe;
    expect(() => new Deployment(deployment).validate()).not.toThrow(); // why the type check is there
    expect(typeErrors([deployment]).join('\n')).toMatch(/livenessProbee/);
  }, 60_000);

  it('every environment variable is one config.ts reads', () => {
    for (const objects of [overlays.dev, overlays.prod]) {
      const configMap = one(objects, 'ConfigMap');
      for (const name of Object.keys(configMap.data)) expect(known.has(name), `ConfigMap ${name}`).toBe(true);
      const container = one(objects, 'Deployment').spec.template.spec.containers[0];
      // NODE_OPTIONS is Node's own, not the service's.
      for (const { name } of container.env) if (name !== 'NODE_OPTIONS') expect(known.has(name), `env ${name}`).toBe(true);
    }
    const secret = secretTemplate();
    const keys = Object.keys({ ...secret.data, ...secret.stringData });
    expect(keys.sort()).toEqual(['AMQP_URL', 'DATABASE_URL', 'JWT_PUBLIC_KEY', 'SERVICE_JWT_PRIVATE_KEY']);
    for (const key of keys) expect(known.has(key), `Secret ${key}`).toBe(true);
    // Keys only: a value in the template would be a credential in git.
    for (const value of Object.values({ ...secret.data, ...secret.stringData })) expect(value).toBe('');
  });

  it('the Deployment reads the generated ConfigMap and the Secret by their names, and no credential is in the ConfigMap', () => {
    for (const objects of [overlays.dev, overlays.prod]) {
      const configMap = one(objects, 'ConfigMap');
      const container = one(objects, 'Deployment').spec.template.spec.containers[0];
      expect(container.envFrom).toEqual([{ configMapRef: { name: configMap.metadata.name } }, { secretRef: { name: secretTemplate().metadata.name } }]);
      for (const name of ['DATABASE_URL', 'AMQP_URL', 'SERVICE_JWT_PRIVATE_KEY', 'JWT_PUBLIC_KEY']) expect(configMap.data).not.toHaveProperty(name);
      // Production auth: with neither a key nor a JWKS URL the service would run its dev token issuer.
      expect(configMap.data.JWT_ISSUER).toBeTruthy();
      expect(configMap.data.JWT_AUDIENCE).toBeTruthy();
    }
  });

  it('the pods are probed, drained, bounded and unprivileged', () => {
    for (const [name, objects] of Object.entries(overlays)) {
      const deployment = one(objects, 'Deployment');
      const pod = deployment.spec.template.spec;
      const container = pod.containers[0];
      const port = Number(one(objects, 'ConfigMap').data.PORT);
      expect(container.ports).toContainEqual({ name: 'http', containerPort: port, protocol: 'TCP' });
      expect(deployment.spec.template.metadata.annotations['prometheus.io/port']).toBe(String(port));
      expect(container.startupProbe.httpGet).toEqual({ path: '/health/live', port: 'http' });
      expect(container.livenessProbe.httpGet).toEqual({ path: '/health/live', port: 'http' });
      expect(container.readinessProbe.httpGet).toEqual({ path: '/health/ready', port: 'http' });

      const preStopSleep = Number(container.lifecycle.preStop.exec.command[1]);
      expect(container.lifecycle.preStop.exec.command[0]).toBe('sleep');
      expect(preStopSleep).toBeGreaterThan(0);
      expect(pod.terminationGracePeriodSeconds, name).toBeGreaterThan(preStopSleep + DRAIN_DEADLINE_SEC);

      expect(container.resources.requests.cpu).toBeTruthy();
      expect(container.resources.requests.memory).toBeTruthy();
      const limitMiB = mebibytes(container.resources.limits.memory);
      const heap = /--max-old-space-size=(\d+)/.exec(container.env.find((e: { name: string }) => e.name === 'NODE_OPTIONS').value);
      expect(Number(heap![1]), `${name}: V8 heap inside the memory limit`).toBeLessThan(limitMiB * 0.8);

      expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 1000, seccompProfile: { type: 'RuntimeDefault' } });
      expect(container.securityContext).toMatchObject({ runAsNonRoot: true, readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } });
      expect(pod.automountServiceAccountToken).toBe(false);
      expect(deployment.spec.replicas, 'the HPA owns the replica count').toBeUndefined();
      expect(deployment.spec.strategy.rollingUpdate.maxUnavailable).toBe(0);

      const keys = pod.topologySpreadConstraints.map((c: { topologyKey: string }) => c.topologyKey);
      expect(keys.sort(), `${name}: one constraint per topology key`).toEqual(['kubernetes.io/hostname', 'topology.kubernetes.io/zone']);
      for (const c of pod.topologySpreadConstraints) expect(matches(c.labelSelector.matchLabels, deployment.spec.template.metadata.labels)).toBe(true);
    }
    const prodHostSpread = one(overlays.prod, 'Deployment').spec.template.spec.topologySpreadConstraints.find((c: { topologyKey: string }) => c.topologyKey === 'kubernetes.io/hostname');
    expect(prodHostSpread.whenUnsatisfiable).toBe('DoNotSchedule');
  });

  it('Service, PDB, NetworkPolicy and HPA point at the Deployment, and the Ingress at the Service', () => {
    for (const objects of Object.values(overlays)) {
      const deployment = one(objects, 'Deployment');
      const podLabels = deployment.spec.template.metadata.labels;
      expect(matches(deployment.spec.selector.matchLabels, podLabels)).toBe(true);
      const service = one(objects, 'Service');
      expect(matches(service.spec.selector, podLabels)).toBe(true);
      expect(service.spec.ports[0].targetPort).toBe('http');
      expect(matches(one(objects, 'PodDisruptionBudget').spec.selector.matchLabels, podLabels)).toBe(true);
      expect(matches(one(objects, 'NetworkPolicy').spec.podSelector.matchLabels, podLabels)).toBe(true);

      const hpa = one(objects, 'HorizontalPodAutoscaler');
      expect(hpa.spec.scaleTargetRef).toEqual({ apiVersion: 'apps/v1', kind: 'Deployment', name: deployment.metadata.name });
      expect(hpa.spec.metrics.find((m: { type: string }) => m.type === 'Resource').resource.name).toBe('cpu');
      expect(hpa.spec.minReplicas).toBeLessThanOrEqual(hpa.spec.maxReplicas);
      for (const metric of hpa.spec.metrics.filter((m: { type: string }) => m.type === 'Pods')) {
        const adapterRules = parse(readFileSync(path.join(DEPLOY, 'k8s/prometheus-adapter-rules.yaml'), 'utf8'));
        expect(adapterRules.rules.custom.map((r: { name: { as: string } }) => r.name.as)).toContain(metric.pods.metric.name);
      }

      const ingress = one(objects, 'Ingress');
      const backend = ingress.spec.rules[0].http.paths[0].backend.service;
      expect(backend).toEqual({ name: service.metadata.name, port: { name: 'http' } });
      expect(ingress.spec.tls[0].hosts).toContain(ingress.spec.rules[0].host);
    }
    expect(one(overlays.prod, 'HorizontalPodAutoscaler').spec.minReplicas).toBeGreaterThanOrEqual(3);
    // prod scales on connections too (with prometheus-adapter); dev on CPU alone.
    expect(one(overlays.prod, 'HorizontalPodAutoscaler').spec.metrics.map((m: { type: string }) => m.type).sort()).toEqual(['Pods', 'Resource']);
    expect(one(overlays.dev, 'HorizontalPodAutoscaler').spec.metrics.map((m: { type: string }) => m.type)).toEqual(['Resource']);
  });

  it('the Ingress keeps WebSockets open and SockJS sessions on one pod', () => {
    for (const objects of Object.values(overlays)) {
      const annotations = one(objects, 'Ingress').metadata.annotations!;
      const nginx = (key: string): string | undefined => annotations[`nginx.ingress.kubernetes.io/${key}`];
      expect(Number(nginx('proxy-read-timeout'))).toBeGreaterThanOrEqual(3600);
      expect(Number(nginx('proxy-send-timeout'))).toBeGreaterThanOrEqual(3600);
      expect(nginx('affinity')).toBe('cookie');
      expect(nginx('proxy-buffering')).toBe('off');
      expect(one(objects, 'Ingress').spec.ingressClassName).toBe('nginx');
    }
  });

  it('the custom metric the HPA scales on is one the service exports', async () => {
    const { Metrics } = await import('../../src/observability/metrics.js');
    const names = (await new Metrics({ defaultMetrics: false }).registry.getMetricsAsJSON()).map((m) => m.name);
    const hpa = one(overlays.prod, 'HorizontalPodAutoscaler');
    expect(names).toContain(hpa.spec.metrics.find((m: { type: string }) => m.type === 'Pods').pods.metric.name);
  });
});

function mebibytes(quantity: string): number {
  const match = /^(\d+)(Mi|Gi)$/.exec(quantity);
  if (!match) throw new Error(`unexpected memory quantity ${quantity}`);
  return Number(match[1]) * (match[2] === 'Gi' ? 1024 : 1);
}
