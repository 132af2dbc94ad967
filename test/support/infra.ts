import { randomBytes } from 'node:crypto';
import { inject } from 'vitest';

export const infra = inject('infra');

export { createTestDatabase, type TestDatabase } from './test-database.js';

/** A name unique to this run, for queues, exchanges' bindings and the like. */
export const uniqueName = (prefix: string): string => `${prefix}.${Date.now().toString(36)}.${randomBytes(4).toString('hex')}`;
