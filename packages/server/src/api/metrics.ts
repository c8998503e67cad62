import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/**
 * Prometheus metrics of one platform instance. A registry per instance (not prom-client's global one)
 * keeps several platforms in one test process apart.
 */
export class PlatformMetrics {
  readonly registry = new Registry();
  readonly httpRequests: Counter<'method' | 'route' | 'status'>;
  readonly httpDuration: Histogram<'method' | 'route'>;
  readonly auditEntries: Counter<'outcome'>;
  readonly authRefusals: Counter<'reason'>;
  readonly estRequests: Counter<'operation' | 'outcome'>;
  readonly ocspResponses: Counter<'status'>;
  readonly gatewayConnects: Counter;
  readonly gatewayRefusals: Counter<'kind'>;
  readonly gatewayMessages: Counter<'direction'>;
  readonly gatewayBytes: Counter<'direction'>;
  readonly updatesServedBytes: Counter<'kind'>;

  constructor(version: string) {
    collectDefaultMetrics({ register: this.registry, prefix: 'rampart_process_' });
    new Gauge({
      name: 'rampart_build_info',
      help: 'Rampart version.',
      labelNames: ['version'],
      registers: [this.registry],
    }).set({ version }, 1);
    this.httpRequests = new Counter({
      name: 'rampart_http_requests_total',
      help: 'Management API requests by method, route and status.',
      labelNames: ['method', 'route', 'status'],
      registers: [this.registry],
    });
    this.httpDuration = new Histogram({
      name: 'rampart_http_request_duration_seconds',
      help: 'Management API request latency.',
      labelNames: ['method', 'route'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [this.registry],
    });
    this.auditEntries = new Counter({
      name: 'rampart_audit_entries_appended_total',
      help: 'Audit entries appended by this instance, by outcome.',
      labelNames: ['outcome'],
      registers: [this.registry],
    });
    this.authRefusals = new Counter({
      name: 'rampart_api_auth_refusals_total',
      help: 'Requests refused for a missing, invalid or insufficient token.',
      labelNames: ['reason'],
      registers: [this.registry],
    });
    this.estRequests = new Counter({
      name: 'rampart_est_requests_total',
      help: 'EST enrollment requests by operation and outcome (issued, refused, error).',
      labelNames: ['operation', 'outcome'],
      registers: [this.registry],
    });
    this.gatewayConnects = new Counter({
      name: 'rampart_gateway_connects_total',
      help: 'MQTT sessions admitted by the gateway.',
      registers: [this.registry],
    });
    this.gatewayRefusals = new Counter({
      name: 'rampart_gateway_refusals_total',
      help: 'MQTT connections refused and actions denied by the gateway, by kind (connect, publish, subscribe, receive).',
      labelNames: ['kind'],
      registers: [this.registry],
    });
    this.gatewayMessages = new Counter({
      name: 'rampart_gateway_messages_total',
      help: 'MQTT messages through the gateway: in (published by devices) and out (delivered to devices).',
      labelNames: ['direction'],
      registers: [this.registry],
    });
    this.gatewayBytes = new Counter({
      name: 'rampart_gateway_payload_bytes_total',
      help: 'MQTT payload bytes through the gateway, in and out.',
      labelNames: ['direction'],
      registers: [this.registry],
    });
    this.updatesServedBytes = new Counter({
      name: 'rampart_updates_served_bytes_total',
      help: 'Body bytes served to devices by the updates listener (metadata, target, delta) and the director (director).',
      labelNames: ['kind'],
      registers: [this.registry],
    });
    this.ocspResponses = new Counter({
      name: 'rampart_ocsp_responses_total',
      help: 'OCSP single responses by certificate status (good, revoked, unknown; error for failed requests).',
      labelNames: ['status'],
      registers: [this.registry],
    });
  }

  /** A gauge whose value is read from the platform at scrape time. */
  gaugeFromCallback(
    name: string,
    help: string,
    labelNames: string[],
    read: () => Promise<{ labels: Record<string, string>; value: number }[]>,
  ) {
    new Gauge({
      name,
      help,
      labelNames,
      registers: [this.registry],
      async collect() {
        this.reset();
        for (const { labels, value } of await read()) this.set(labels, value);
      },
    });
  }
}
