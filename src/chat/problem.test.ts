import { describe, expect, it } from 'vitest';
import { ChatError } from './chat-errors.js';
import { asChatError, toProblem } from './problem.js';

describe('toProblem', () => {
  it('tells a ChatError as its catalogue entry, with its detail and extensions', () => {
    const problem = toProblem(new ChatError('CONTENT_TOO_LONG', 'content must be at most 4 characters', { field: 'content', maxChars: 4 }));
    expect(problem).toEqual({
      type: 'urn:chat-service:problem:content-too-long',
      title: 'Message content is too long',
      status: 413,
      detail: 'content must be at most 4 characters',
      code: 'CONTENT_TOO_LONG',
      field: 'content',
      maxChars: 4,
    });
  });

  it('never lets an extension replace a standard member', () => {
    const problem = toProblem(new ChatError('RATE_LIMITED', 'slow down', { code: 'INTERNAL', status: 200, retryAfterSeconds: 3 }));
    expect(problem).toMatchObject({ code: 'RATE_LIMITED', status: 429, retryAfterSeconds: 3 });
  });

  it('tells a schema validation error as VALIDATION_FAILED naming the field', () => {
    const ajv = Object.assign(new Error('body/content must be string'), {
      validationContext: 'body',
      validation: [{ instancePath: '/content', message: 'must be string', params: {} }],
    });
    expect(toProblem(ajv)).toMatchObject({ code: 'VALIDATION_FAILED', status: 400, detail: 'body content: must be string', errors: [{ field: 'content', message: 'must be string' }] });
    const missing = Object.assign(new Error('x'), { validationContext: 'body', validation: [{ instancePath: '', message: "must have required property 'toEmail'", params: { missingProperty: 'toEmail' } }] });
    expect(toProblem(missing)).toMatchObject({ detail: "body toEmail: must have required property 'toEmail'", errors: [{ field: 'toEmail' }] });
  });

  it('hides anything else behind INTERNAL, whatever was thrown', () => {
    for (const thrown of [new Error('connect ECONNREFUSED 10.0.0.7:5432 password=hunter2'), 'a string', undefined, { code: 'ECONNRESET', status: 400 }]) {
      const problem = toProblem(thrown);
      expect(problem).toEqual({ type: 'urn:chat-service:problem:internal', title: 'Internal error', status: 500, detail: 'internal error', code: 'INTERNAL' });
    }
  });

  it('keeps what it hid as the cause, for the log', () => {
    const bug = new TypeError('x is undefined');
    expect(asChatError(bug)).toMatchObject({ code: 'INTERNAL', cause: bug });
  });
});
