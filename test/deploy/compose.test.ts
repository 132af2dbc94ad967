/**
 * deploy/docker-compose.yml, without Docker (no engine and no compose here): the file parses, the
 * services it promises are there, every chat-service variable is one config.ts reads, the keys it
 * mounts are the files deploy/compose/keys.mjs writes, and nginx's upstream list names the chat
 * instances. Whether the containers come up is not checked here (README, "Deploying").
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { CONFIG_VARIABLES } from '../../src/config/config.js';
import { DEPLOY } from './deploy-support.js';

interface ComposeService {
  image?: string;
  build?: { context: string; dockerfile: string; target?: string };
  entrypoint?: string[];
  command?: string[];
  environment?: Record<string, string>;
  volumes?: string[];
  depends_on?: Record<string, { condition: string }>;
  ports?: string[];
  user?: string;
}

// `merge: true` applies the `<<:` keys compose uses for the shared chat-service definition.
const compose = parse(readFileSync(path.join(DEPLOY, 'docker-compose.yml'), 'utf8'), { merge: true }) as { services: Record<string, ComposeService>; volumes: Record<string, unknown> };
const chatNames = Object.keys(compose.services).filter((name) => /^chat-\d+$/.test(name));

describe('docker-compose.yml', () => {
  it('runs PostgreSQL, RabbitMQ, the profile service, three chat-service instances and nginx', () => {
    expect(Object.keys(compose.services)).toEqual(expect.arrayContaining(['postgres', 'rabbitmq', 'profile-service', 'keys', 'nginx']));
    expect(chatNames).toEqual(['chat-1', 'chat-2', 'chat-3']);
    for (const name of chatNames) {
      const service = compose.services[name]!;
      expect(service.build).toEqual({ context: '..', dockerfile: 'deploy/Dockerfile' });
      expect(service.environment?.INSTANCE_ID).toBe(name);
      expect(Object.keys(service.depends_on ?? {}).sort()).toEqual(['keys', 'postgres', 'profile-service', 'rabbitmq']);
    }
    expect(compose.services['profile-service']!.build?.target).toBe('build');
    for (const volume of ['postgres', 'rabbitmq', 'keys']) expect(compose.volumes).toHaveProperty(volume);
  });

  it('gives the instances only variables config.ts reads, production auth, and the shared backing services', () => {
    const known = new Set<string>(CONFIG_VARIABLES);
    for (const name of chatNames) {
      const service = compose.services[name]!;
      const exported = [...service.entrypoint!.join('\n').matchAll(/export (\w+)=/g)].map((m) => m[1]!);
      for (const variable of [...Object.keys(service.environment!), ...exported]) expect(known.has(variable), `${name}: ${variable}`).toBe(true);
      expect(exported.sort()).toEqual(['JWT_PUBLIC_KEY', 'SERVICE_JWT_PRIVATE_KEY']);
      expect(service.environment).toMatchObject({
        DATABASE_URL: expect.stringMatching(/^postgres:\/\/[^/]*@postgres:5432\//),
        AMQP_URL: expect.stringMatching(/@rabbitmq:5672/),
        PROFILE_SERVICE_URL: 'http://profile-service:8090',
        JWT_ISSUER: compose.services.keys!.environment!.TOKEN_ISSUER,
        JWT_AUDIENCE: compose.services.keys!.environment!.TOKEN_AUDIENCE,
      });
    }
  });

  it('mounts the key files keys.mjs writes', () => {
    const keysScript = readFileSync(path.join(DEPLOY, 'compose/keys.mjs'), 'utf8');
    const written = new Set([...keysScript.matchAll(/keyPair\('([\w-]+)'/g)].flatMap((m) => [`${m[1]}-private.pem`, `${m[1]}-public.pem`]));
    const read = [chatNames[0]!, 'profile-service'].flatMap((name) => [...compose.services[name]!.entrypoint!.join('\n').matchAll(/\/keys\/([\w.-]+)/g)].map((m) => m[1]!));
    expect(read.sort()).toEqual(['client-jwt-public.pem', 'service-jwt-private.pem', 'service-jwt-public.pem']);
    for (const file of read) expect(written.has(file), file).toBe(true);
  });

  it('puts nginx with deploy/nginx/chat.conf in front of exactly the chat instances', () => {
    const nginx = compose.services.nginx!;
    expect(nginx.volumes).toContain('./nginx/chat.conf:/etc/nginx/conf.d/chat.conf:ro');
    const upstreamMount = nginx.volumes!.find((v) => v.endsWith(':/etc/nginx/chat-upstreams.conf:ro'))!;
    const upstreams = readFileSync(path.join(DEPLOY, upstreamMount.split(':')[0]!), 'utf8');
    const servers = [...upstreams.matchAll(/^server ([\w-]+):(\d+)\b/gm)].map((m) => [m[1], Number(m[2])]);
    expect(servers).toEqual(chatNames.map((name) => [name, Number(compose.services[name]!.environment!.PORT)]));
    expect(Object.keys(nginx.depends_on!).sort()).toEqual(chatNames);
    expect(nginx.ports).toEqual(['8080:8080']);
  });
});
