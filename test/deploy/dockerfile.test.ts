/**
 * deploy/Dockerfile without a Docker engine (there is none here, and hadolint is in neither npm nor
 * Debian): its instructions are parsed (dockerfile-ast, the parser of VS Code's Docker support) and
 * checked, then the image's two stages are replayed on this machine: the build context is what
 * .dockerignore lets through (@balena/dockerignore, Docker's matching rules), `npm run build` runs
 * in it, the runtime stage's COPY instructions lay out an /app of their own, and the image's CMD and
 * HEALTHCHECK run there. What is not replayed: `npm ci` (the installed node_modules stands in, and a
 * check that dist/ imports only production dependencies stands in for --omit=dev), the base image
 * and USER (the process runs as this test's user).
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { builtinModules } from 'node:module';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import dockerignoreModule from '@balena/dockerignore';
import { type Dockerfile, DockerfileParser, type Instruction } from 'dockerfile-ast';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitUntilStarted } from '../support/service-process.js';
import { DEPLOY, ROOT } from './deploy-support.js';

// CommonJS whose types declare an ES default export: imported from ESM, the module is the function.
const dockerignore = dockerignoreModule as unknown as typeof dockerignoreModule.default;
const dockerfile: Dockerfile = DockerfileParser.parse(readFileSync(path.join(DEPLOY, 'Dockerfile'), 'utf8'));
const packageJson = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };

interface Stage {
  name: string | undefined;
  image: string;
  instructions: Instruction[];
}

function stages(): Stage[] {
  const result: Stage[] = [];
  for (const instruction of dockerfile.getInstructions()) {
    if (instruction.getKeyword() === 'FROM') {
      const [image, as, name] = instruction.getArguments().map((a) => a.getValue());
      result.push({ name: as?.toUpperCase() === 'AS' ? name : undefined, image: image!, instructions: [] });
    } else {
      result.at(-1)?.instructions.push(instruction);
    }
  }
  return result;
}

const ofKind = (stage: Stage, keyword: string): Instruction[] => stage.instructions.filter((i) => i.getKeyword() === keyword);
const args = (instruction: Instruction): string => instruction.getArgumentsContent() ?? '';
const flag = (instruction: Instruction, name: string): string | undefined =>
  (instruction as Instruction & { getFlags?: () => { getName(): string; getValue(): string | null }[] }).getFlags?.().find((f) => f.getName() === name)?.getValue() ?? undefined;
/** The exec-form JSON array after CMD (or after HEALTHCHECK's flags and CMD). */
const execForm = (instruction: Instruction): string[] => JSON.parse(/(\[.*\])\s*$/s.exec(args(instruction).replace(/\\\n/g, ''))![1]!) as string[];

describe('Dockerfile', () => {
  const [build, runtime] = stages();

  it('has a build stage and a runtime stage, both on node:20-slim', () => {
    expect(stages()).toHaveLength(2);
    expect(build!.name).toBe('build');
    expect(runtime!.name).toBe('runtime');
    for (const stage of stages()) expect(stage.image).toBe('node:20-slim');
  });

  it('builds with npm ci and npm run build, and installs only production dependencies in the runtime stage', () => {
    const buildRuns = ofKind(build!, 'RUN').map(args);
    expect(buildRuns.some((r) => /\bnpm ci\b/.test(r))).toBe(true);
    expect(buildRuns.findIndex((r) => /\bnpm run build\b/.test(r))).toBeGreaterThan(buildRuns.findIndex((r) => /\bnpm ci\b/.test(r)));
    const runtimeInstall = ofKind(runtime!, 'RUN').map(args).find((r) => /\bnpm ci\b/.test(r));
    expect(runtimeInstall).toMatch(/--omit=dev/);
    // `prepare` would run Vite, which --omit=dev does not install.
    expect(runtimeInstall).toMatch(/--ignore-scripts/);
    expect(ofKind(runtime!, 'ENV').map(args)).toContain('NODE_ENV=production');
  });

  it('copies dist/, web/dist and migrations/ from the build stage', () => {
    const copies = ofKind(runtime!, 'COPY').filter((c) => flag(c, 'from') === 'build').map((c) => c.getArguments().map((a) => a.getValue()));
    expect(copies).toEqual(expect.arrayContaining([['/app/dist', './dist'], ['/app/web/dist', './web/dist'], ['/app/migrations', './migrations']]));
  });

  it('runs as the unprivileged node user, with a node health check on /health/live and SIGTERM to stop', () => {
    const users = ofKind(runtime!, 'USER').map(args);
    expect(users.at(-1)).toBe('node');
    const healthchecks = ofKind(runtime!, 'HEALTHCHECK');
    expect(healthchecks).toHaveLength(1);
    const command = execForm(healthchecks[0]!);
    expect(command[0]).toBe('node');
    expect(command.join(' ')).toMatch(/\/health\/live/);
    expect(ofKind(runtime!, 'STOPSIGNAL').map(args)).toEqual(['SIGTERM']);
    expect(execForm(ofKind(runtime!, 'CMD').at(-1)!)).toContain('dist/main.js');
  });

  it('bakes in no secret and no deployment-specific setting', () => {
    for (const stage of stages()) {
      for (const instruction of [...ofKind(stage, 'ENV'), ...ofKind(stage, 'ARG')]) {
        expect(args(instruction)).not.toMatch(/PASSWORD|SECRET|TOKEN|PRIVATE|_KEY|DATABASE_URL|AMQP_URL|JWT/i);
      }
    }
    const ignore = readFileSync(path.join(ROOT, '.dockerignore'), 'utf8');
    for (const entry of ['node_modules', 'dist', 'web/dist', '.env', '.git', 'data']) expect(ignore.split('\n')).toContain(entry);
  });
});

describe('the image, replayed on this machine', () => {
  const temp = mkdtempSync(path.join(os.tmpdir(), 'chat-image-'));
  const context = path.join(temp, 'context');
  const app = path.join(temp, 'app');
  const children: ChildProcess[] = [];

  beforeAll(() => {
    // The build context: the repository less what .dockerignore excludes.
    const ignore = dockerignore().add(readFileSync(path.join(ROOT, '.dockerignore'), 'utf8'));
    const copy = (relative: string): void => {
      for (const entry of readdirSync(path.join(ROOT, relative), { withFileTypes: true })) {
        const rel = path.posix.join(relative, entry.name);
        if (ignore.ignores(rel)) continue;
        if (entry.isDirectory()) copy(rel);
        else cpSync(path.join(ROOT, rel), path.join(context, rel));
      }
    };
    mkdirSync(context, { recursive: true });
    copy('');
    // Stands in for `npm ci` in the build stage.
    symlinkSync(path.join(ROOT, 'node_modules'), path.join(context, 'node_modules'), 'dir');
  });

  afterAll(() => {
    for (const child of children) child.kill('SIGKILL');
    rmSync(temp, { recursive: true, force: true });
  });

  it('the build context has what the build needs and nothing local', () => {
    const top = readdirSync(context).sort();
    expect(top).toEqual(expect.arrayContaining(['client', 'migrations', 'package-lock.json', 'package.json', 'src', 'tsconfig.build.json', 'tsconfig.json', 'web']));
    for (const excluded of ['dist', 'data', '.git', 'test', 'deploy', '.env']) expect(top).not.toContain(excluded);
    expect(readdirSync(path.join(context, 'web'))).not.toContain('dist');
  });

  it('npm run build compiles the service and the page (build stage)', () => {
    const result = spawnSync('npm', ['run', 'build'], { cwd: context, encoding: 'utf8', timeout: 240_000 });
    expect(result.status, result.stdout + result.stderr).toBe(0);
    expect(readdirSync(path.join(context, 'dist'))).toContain('main.js');
    expect(readdirSync(path.join(context, 'dist'))).not.toContain('config.test.js');
    expect(readdirSync(path.join(context, 'web/dist'))).toContain('index.html');

    // The runtime stage: its COPY instructions, from the context or from the build stage.
    mkdirSync(app);
    const [, runtime] = stages();
    for (const copy of ofKind(runtime!, 'COPY')) {
      const values = copy.getArguments().map((a) => a.getValue());
      const destination = values.pop()!;
      for (const source of values) {
        const from = flag(copy, 'from') === 'build' ? path.join(context, path.relative('/app', source)) : path.join(context, source);
        const to = destination.endsWith('/') ? path.join(app, destination, path.basename(source)) : path.join(app, destination);
        cpSync(from, to, { recursive: true });
      }
    }
    // Stands in for `npm ci --omit=dev`; the next test holds dist/ to production dependencies.
    symlinkSync(path.join(ROOT, 'node_modules'), path.join(app, 'node_modules'), 'dir');
  }, 300_000);

  it('dist/ imports only Node built-ins and production dependencies (npm ci --omit=dev suffices)', () => {
    const imported = new Set<string>();
    const walk = (dir: string): void => {
      for (const entry of readdirSync(dir, { withFileTypes: true })) {
        const file = path.join(dir, entry.name);
        if (entry.isDirectory()) walk(file);
        else if (entry.name.endsWith('.js')) {
          for (const match of readFileSync(file, 'utf8').matchAll(/(?:^|\n)\s*(?:import|export)\s[^'"]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g)) {
            imported.add((match[1] ?? match[2])!);
          }
        }
      }
    };
    walk(path.join(app, 'dist'));
    expect(imported.size).toBeGreaterThan(10);
    const builtins = new Set(builtinModules);
    for (const specifier of imported) {
      if (specifier.startsWith('.') || specifier.startsWith('node:') || builtins.has(specifier)) continue;
      const name = specifier.startsWith('@') ? specifier.split('/').slice(0, 2).join('/') : specifier.split('/')[0]!;
      expect(Object.keys(packageJson.dependencies), `dist/ imports ${specifier}`).toContain(name);
    }
  });

  /** Runs the image's CMD in the replayed /app, as the container would. */
  async function startImage(env: Record<string, string>): Promise<{ url: string; child: ChildProcess; exited: Promise<number | string> }> {
    const [command, ...rest] = execForm(ofKind(stages()[1]!, 'CMD').at(-1)!);
    expect(command).toBe('node');
    const child = spawn(process.execPath, rest, {
      cwd: app,
      env: { PATH: process.env.PATH, HOME: os.tmpdir(), NODE_ENV: 'production', PORT: '0', HOST: '127.0.0.1', DATA_DIR: mkdtempSync(path.join(temp, 'data-')), ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(child);
    const { url, exited } = await waitUntilStarted(child, 'node dist/main.js', 150_000);
    return { url, child, exited };
  }

  it('on the embedded default it serves /health/ready, the web page and /metrics, passes its HEALTHCHECK and stops on SIGTERM', async () => {
    const { url, child, exited } = await startImage({});
    const ready = await fetch(`${url}/health/ready`);
    expect(ready.status).toBe(200);
    const page = await fetch(`${url}/`);
    expect(page.status).toBe(200);
    const html = await page.text();
    expect(html).toMatch(/<script type="module"[^>]*src="\/assets\//);
    const asset = /src="(\/assets\/[^"]+)"/.exec(html)![1]!;
    expect((await fetch(`${url}${asset}`)).status).toBe(200);
    expect(await (await fetch(`${url}/metrics`)).text()).toMatch(/chat_outbox_rows/);

    // The HEALTHCHECK command itself, against this instance's port.
    const [command, ...rest] = execForm(ofKind(stages()[1]!, 'HEALTHCHECK')[0]!);
    expect(command).toBe('node');
    const probe = spawnSync(process.execPath, rest, { env: { PATH: process.env.PATH, PORT: new URL(url).port }, timeout: 10_000 });
    expect(probe.status).toBe(0);
    const down = spawnSync(process.execPath, rest, { env: { PATH: process.env.PATH, PORT: '1' }, timeout: 10_000 });
    expect(down.status).toBe(1);

    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  }, 240_000);

  it('with deploy/compose/keys.mjs as the identity provider it accepts the tokens keys.mjs signs', async () => {
    const keys = path.join(temp, 'keys');
    const signed = spawnSync(process.execPath, [path.join(DEPLOY, 'compose/keys.mjs'), keys, 'alice@example.com'], {
      env: { PATH: process.env.PATH, TOKEN_ISSUER: 'chat-compose-idp', TOKEN_AUDIENCE: 'chat-service' },
      encoding: 'utf8',
    });
    expect(signed.status, signed.stderr).toBe(0);
    const token = readFileSync(path.join(keys, 'tokens.txt'), 'utf8').split(' ')[1]!.trim();
    const { url, child, exited } = await startImage({
      JWT_PUBLIC_KEY: readFileSync(path.join(keys, 'client-jwt-public.pem'), 'utf8'),
      JWT_ISSUER: 'chat-compose-idp',
      JWT_AUDIENCE: 'chat-service',
    });
    expect((await fetch(`${url}/api/chat/sessions`)).status).toBe(401);
    const sessions = await fetch(`${url}/api/chat/sessions`, { headers: { authorization: `Bearer ${token}` } });
    expect(sessions.status).toBe(200);
    expect((await fetch(`${url}/dev/token`, { method: 'POST' })).status).toBe(404);
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  }, 240_000);
});
