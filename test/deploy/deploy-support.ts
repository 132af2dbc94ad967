/** What the deploy/ tests share: where the repository is, and whether a tool is on this machine. */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const DEPLOY = path.join(ROOT, 'deploy');

/** Undefined when `command args` runs and exits 0; else why not, with how to get it. */
export function missingTool(command: string, args: readonly string[], howToGet: string): string | undefined {
  const result = spawnSync(command, args, { encoding: 'utf8', timeout: 30_000 });
  if (result.error) return `${command} is not installed (${howToGet})`;
  if (result.status !== 0) return `${command} ${args.join(' ')} failed: ${(result.stderr || result.stdout).trim()}`;
  return undefined;
}
