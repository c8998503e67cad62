/**
 * A load-generator process: holds a share of the fleet in a LoadEngine and does what the parent
 * asks over the IPC channel (see protocol.ts). Started by LoadGenerator; not meant to be run by hand.
 */
import { LoadEngine } from './engine.js';
import type { ReplyEnvelope, RequestEnvelope, WorkerRequest } from './protocol.js';

if (!process.send) {
  process.stderr.write('the load worker runs under LoadGenerator (it needs an IPC channel)\n');
  process.exit(2);
}

let engine: LoadEngine | null = null;

function need(): LoadEngine {
  if (!engine) throw new Error('the worker was not initialized');
  return engine;
}

async function handle(request: WorkerRequest): Promise<unknown> {
  switch (request.op) {
    case 'init':
      engine = new LoadEngine(request.identities, request.options);
      return { devices: request.identities.length };
    case 'open':
      return need().open(request.options);
    case 'publish':
      return need().publish(request.options);
    case 'close':
      return { closed: await need().closeAll() };
    case 'status': {
      const cpu = process.cpuUsage();
      return {
        pid: process.pid,
        open: engine?.openCount ?? 0,
        dropped: engine?.dropped ?? 0,
        rssBytes: process.memoryUsage.rss(),
        cpuMicros: cpu.user + cpu.system,
      };
    }
  }
}

process.on('message', (message: RequestEnvelope) => {
  handle(message.request).then(
    (result) => process.send!({ seq: message.seq, ok: true, result } satisfies ReplyEnvelope),
    (err: unknown) =>
      process.send!({
        seq: message.seq,
        ok: false,
        error: err instanceof Error ? (err.stack ?? err.message) : String(err),
      } satisfies ReplyEnvelope),
  );
});
// The parent going away ends the worker.
process.on('disconnect', () => process.exit(0));
