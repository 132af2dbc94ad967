import type { BusEnvelope } from './ports.js';

/**
 * The envelope, if `value` has its shape (recipients as strings, an event with a type); else
 * undefined. Checked where envelopes come back from outside the process (a bus message, an outbox
 * row), so one malformed envelope is refused alone instead of failing the batch it travels in.
 */
export function asBusEnvelope(value: unknown): BusEnvelope | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const { recipients, event } = value as { recipients?: unknown; event?: unknown };
  if (!Array.isArray(recipients) || !recipients.every((r) => typeof r === 'string')) return undefined;
  if (typeof event !== 'object' || event === null || typeof (event as { type?: unknown }).type !== 'string') return undefined;
  return value as BusEnvelope;
}
