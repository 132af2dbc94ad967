/**
 * Reconnect delays: exponential from `initialMs` up to `maxMs`, with "equal jitter" (half fixed,
 * half random) so that clients dropped together by a restart do not come back in lock-step.
 */
export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
}

export function backoffDelay(attempt: number, options: BackoffOptions, random: () => number = Math.random): number {
  const ceiling = Math.min(options.maxMs, options.initialMs * 2 ** Math.min(attempt, 30));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}
