/** Runs the real service as a child process (`src/main.ts`), as a user or an orchestrator would. */
import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export interface ServiceProcess {
  url: string;
  child: ChildProcess;
  output(): string;
  /** Resolves with the exit code (or signal name) once the process has exited. */
  exited: Promise<number | string>;
}

export async function startServiceProcess(env: Record<string, string>, timeoutMs = 60_000): Promise<ServiceProcess> {
  const nodeArgs = process.env.SERVICE_NODE_ARGS ? process.env.SERVICE_NODE_ARGS.split(' ') : [];
  const child = spawn(process.execPath, [...nodeArgs, '--import', 'tsx', path.join(ROOT, 'src/main.ts')], {
    cwd: ROOT,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const { url, output, exited } = await waitUntilStarted(child, 'service', timeoutMs);
  return { url, child, output, exited };
}

/** Resolves with the URL a child chat-service logs once it listens; rejects if it exits or times out first. */
export async function waitUntilStarted(
  child: ChildProcess,
  what: string,
  timeoutMs: number,
): Promise<{ url: string; output: () => string; exited: Promise<number | string> }> {
  let out = '';
  const exited = new Promise<number | string>((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal ?? -1)));
  const keep = (chunk: Buffer): void => {
    out += chunk.toString();
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} did not start in ${timeoutMs} ms:\n${out}`)), timeoutMs);
    // Looked for until found, and only in what arrived since the last complete line: the service
    // logs a line per stored message, and matching the whole output on every chunk is quadratic.
    let searchedTo = 0;
    const onData = (): void => {
      const match = /"url":"(http:\/\/[^"]+)"[^\n]*"msg":"chat-service started"/.exec(out.slice(searchedTo));
      if (match) {
        clearTimeout(timer);
        child.stdout!.off('data', onData);
        child.stderr!.off('data', onData);
        resolve(match[1]!);
        return;
      }
      searchedTo = Math.max(searchedTo, out.lastIndexOf('\n') + 1);
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited (${code}) before starting:\n${out}`));
    });
  });
  return { url, output: () => out, exited };
}
