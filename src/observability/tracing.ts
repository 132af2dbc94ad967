/**
 * Distributed tracing with OpenTelemetry, off unless OTEL_EXPORTER_OTLP_ENDPOINT is set. While off,
 * `@opentelemetry/api` hands out no-op tracers and spans, so the instrumented code costs next to
 * nothing.
 *
 * One send is one trace across instances: the transport's `chat.send` span, the store's
 * `chat.store`, the relay's `outbox.publish`, and on every receiving instance `chat.deliver` around
 * the socket writes. The send's context travels in the event itself (`BusEnvelope.trace`, a W3C
 * `traceparent` carrier), so it is in the outbox row and in the AMQP message, and it survives a
 * relay restart or a claim by another instance. A bus batch also carries its publish span's context
 * as a `traceparent` AMQP header.
 */
import { context, propagation, ROOT_CONTEXT, SpanKind, trace, type Context, type Span, type Tracer } from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BatchSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';

export interface TracingOptions {
  /** OTLP/HTTP base URL, e.g. http://otel-collector:4318; traces go to `{endpoint}/v1/traces`. */
  endpoint: string;
  serviceName: string;
  instanceId: string;
}

export interface Tracing {
  /** Exports what is buffered and stops. */
  shutdown(): Promise<void>;
}

/** The tracer every instrumented module uses; a no-op until `startTracing` registers a provider. */
export function tracer(): Tracer {
  return trace.getTracer('chat-service');
}

export function startTracing(options: TracingOptions): Tracing {
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ 'service.name': options.serviceName, 'service.instance.id': options.instanceId }),
    spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter({ url: `${options.endpoint.replace(/\/+$/, '')}/v1/traces` }), { scheduledDelayMillis: 500 })],
  });
  // The W3C propagator only: our carriers are the envelope's `trace` and AMQP headers, nothing else.
  provider.register({ propagator: new W3CTraceContextPropagator() });
  return {
    shutdown: async () => {
      await provider.shutdown();
      trace.disable();
      propagation.disable();
      context.disable();
    },
  };
}

/** The W3C carrier of `ctx` (default: the active context), or undefined when it holds no sampled span. */
export function traceCarrier(ctx: Context = context.active()): Record<string, string> | undefined {
  if (!trace.getSpan(ctx)?.isRecording()) return undefined;
  const carrier: Record<string, string> = {};
  propagation.inject(ctx, carrier);
  return carrier.traceparent ? carrier : undefined;
}

/** The context a carrier names, as the parent of spans started from it. */
export function contextFrom(carrier: Readonly<Record<string, unknown>> | undefined): Context {
  if (!carrier) return context.active();
  return propagation.extract(context.active(), carrier as Record<string, string>);
}

/** Runs `fn` in a span, ending it when `fn` settles; a thrown error marks it failed. */
export async function inSpan<T>(name: string, attributes: Record<string, string | number | boolean>, fn: (span: Span) => Promise<T>, parent?: Context): Promise<T> {
  const span = tracer().startSpan(name, { attributes }, parent ?? context.active());
  try {
    return await context.with(trace.setSpan(parent ?? context.active(), span), () => fn(span));
  } catch (err) {
    span.recordException(err instanceof Error ? err : String(err));
    span.setStatus({ code: 2 });
    throw err;
  } finally {
    span.end();
  }
}

/** trace_id and span_id of the active span, for log lines; empty when none records. */
export function activeTraceIds(): { trace_id?: string; span_id?: string } {
  const span = trace.getSpan(context.active());
  if (!span?.isRecording()) return {};
  const { traceId, spanId } = span.spanContext();
  return { trace_id: traceId, span_id: spanId };
}

/**
 * One span per traced event (child of the event's own context) plus one for the batch that carries
 * them (linked to each), all ended by the returned function; the batch's context is what `run`
 * executes in, so a publish inside it can carry it on. Untraced batches cost one array scan.
 */
export function traceBatch<T>(name: string, carriers: ReadonlyArray<Readonly<Record<string, string>> | undefined>, run: () => Promise<T>): Promise<T> {
  const traced = carriers.filter((c): c is Readonly<Record<string, string>> => c !== undefined);
  if (traced.length === 0) return run();
  const parents = traced.map((c) => contextFrom(c));
  const eventSpans = parents.map((parent) => tracer().startSpan(name, { kind: SpanKind.PRODUCER }, parent));
  const links = eventSpans.map((span) => ({ context: span.spanContext() }));
  const batch = tracer().startSpan(`${name} batch`, { kind: SpanKind.PRODUCER, links, attributes: { 'messaging.batch.message_count': carriers.length } }, ROOT_CONTEXT);
  const end = (err?: unknown): void => {
    for (const span of [...eventSpans, batch]) {
      if (err !== undefined) {
        span.recordException(err instanceof Error ? err : String(err));
        span.setStatus({ code: 2 });
      }
      span.end();
    }
  };
  return context.with(trace.setSpan(ROOT_CONTEXT, batch), run).then(
    (value) => {
      end();
      return value;
    },
    (err: unknown) => {
      end(err);
      throw err;
    },
  );
}
