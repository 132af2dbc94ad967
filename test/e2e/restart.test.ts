/** Acknowledged writes survive kill -9 on the embedded default (PGlite on disk). */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { startServiceProcess } from '../support/service-process.js';

const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'chat-restart-'));
afterAll(() => fs.rmSync(dataDir, { recursive: true, force: true }));

async function json(url: string, method: string, body?: unknown, token?: string): Promise<{ status: number; body: any }> {
  const res = await fetch(url, {
    method,
    headers: { ...(body ? { 'content-type': 'application/json' } : {}), ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: res.status, body: await res.json() };
}

describe('kill -9 on the embedded default', () => {
  it('keeps every acknowledged message, and tokens stay valid across the restart', async () => {
    const first = await startServiceProcess({ DATA_DIR: dataDir });
    const token = (await json(`${first.url}/dev/token`, 'POST', { email: 'alice@example.com' })).body.token as string;
    const sessionId = (await json(`${first.url}/api/chat/init`, 'POST', { toEmail: 'bob@example.com', intent: 'dating' }, token)).body.sessionId as string;

    const acked = new Set<string>();
    let stop = false;
    // Four senders keep sending until the process dies under them; only 201s count as acknowledged.
    const senders = Array.from({ length: 4 }, async () => {
      while (!stop) {
        const clientMessageId = randomUUID();
        try {
          const res = await json(`${first.url}/api/chat/message`, 'POST', { sessionId, content: `m-${clientMessageId}`, clientMessageId }, token);
          if (res.status === 201) acked.add(clientMessageId);
        } catch {
          return; // connection refused or reset: the process is gone
        }
      }
    });
    await expect.poll(() => acked.size, { timeout: 20_000 }).toBeGreaterThanOrEqual(100);
    first.child.kill('SIGKILL');
    expect(await first.exited).toBe('SIGKILL');
    stop = true;
    await Promise.all(senders);

    const second = await startServiceProcess({ DATA_DIR: dataDir });
    try {
      const stored = new Set<string>();
      let before: number | undefined;
      for (;;) {
        const page = await json(`${second.url}/api/chat/${sessionId}/history?limit=200${before ? `&before=${before}` : ''}`, 'GET', undefined, token);
        expect(page.status).toBe(200);
        for (const m of page.body.messages) stored.add(m.clientMessageId);
        if (page.body.nextCursor === null) break;
        before = page.body.nextCursor;
      }
      const lost = [...acked].filter((id) => !stored.has(id));
      console.log(`kill -9 ledger: acknowledged ${acked.size}, stored ${stored.size}, lost ${lost.length}`);
      expect(lost).toEqual([]);
      const seqs = (await json(`${second.url}/api/chat/${sessionId}/history?limit=1`, 'GET', undefined, token)).body.messages[0].seq;
      expect(seqs).toBe(stored.size);
    } finally {
      second.child.kill('SIGTERM');
      expect(await second.exited).toBe(0);
    }
  }, 120_000);
});
