/**
 * The JSON value of a message body as rabbitmq-client hands it over: already parsed for
 * `application/json`, a Buffer or string otherwise. `undefined` when it is not JSON.
 */
export function decodeJsonBody(body: unknown): unknown {
  if (!Buffer.isBuffer(body) && typeof body !== 'string') return body;
  try {
    return JSON.parse(body.toString()) as unknown;
  } catch {
    return undefined;
  }
}
