import { execFile } from 'node:child_process';
import { appendFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MEASURED_COMPONENTS, PCR_OF, type MeasurementEvent } from '@rampart/shared/attestation';
import { startSwtpm, type Swtpm } from '../test-support/swtpm.js';
import {
  EventLog,
  SoftwareRegister,
  TpmPcrs,
  checkMeasurements,
  measure,
  type MeasurementRegister,
} from './measurements.js';

/** Measured boot into a real (software) TPM's PCRs through tpm2-tools, and into the software register. */
describe('measured boot', () => {
  let tpm: Swtpm;
  const dirs: string[] = [];
  const stops: (() => Promise<void>)[] = [];
  const scratch = () => {
    const d = mkdtempSync(join(tmpdir(), 'rampart-measure-'));
    dirs.push(d);
    return d;
  };
  beforeAll(async () => {
    tpm = await startSwtpm();
  }, 30_000);
  afterAll(async () => {
    await tpm?.stop();
    for (const stop of stops) await stop();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  async function measureAll(register: MeasurementRegister, log: EventLog): Promise<MeasurementEvent[]> {
    const out: MeasurementEvent[] = [];
    for (const component of MEASURED_COMPONENTS)
      out.push(
        await measure({
          register,
          log,
          component,
          data: Buffer.from(`${component} image`),
          description: component,
        }),
      );
    // A second application measurement extends the same PCR again.
    out.push(
      await measure({
        register,
        log,
        component: 'application',
        data: Buffer.from('plugin'),
        description: 'plugin',
      }),
    );
    return out;
  }

  for (const kind of ['tpm', 'software'] as const) {
    describe(kind === 'tpm' ? 'TPM PCRs (swtpm)' : 'software register', () => {
      const register = () =>
        kind === 'tpm' ? new TpmPcrs(tpm.tcti) : new SoftwareRegister(join(scratch(), 'register.json'));

      it('extends each component into its PCR, logs it, and the log replays to the registers', async () => {
        const r = register();
        // A fresh TPM per kind of test would be slower; PCRs 8–11 of this swtpm are only used here.
        const log = new EventLog(join(scratch(), 'event-log.jsonl'));
        const events = await measureAll(r, log);
        expect(events.map((e) => e.pcr)).toEqual([
          PCR_OF.bootloader,
          PCR_OF.os,
          PCR_OF.application,
          PCR_OF.configuration,
          PCR_OF.application,
        ]);
        const check = await checkMeasurements(r, log);
        expect(check).toMatchObject({ ok: true, events: 5, tornTail: false });

        // An edited digest no longer replays, and the check names the register.
        const lines = readFileSync(log.file, 'utf8').trim().split('\n');
        const edited = JSON.parse(lines[1]!) as MeasurementEvent;
        edited.digest = 'f'.repeat(64);
        lines[1] = JSON.stringify(edited);
        const forged = new EventLog(join(scratch(), 'forged.jsonl'));
        writeFileSync(forged.file, lines.join('\n') + '\n');
        const bad = await checkMeasurements(r, forged);
        expect(bad.ok).toBe(false);
        expect(bad.registers.filter((x) => x.replayed !== x.actual).map((x) => x.pcr)).toEqual([PCR_OF.os]);

        // Something extended without being logged is caught too.
        await r.extend(PCR_OF.configuration, 'a'.repeat(64));
        const unlogged = await checkMeasurements(r, log);
        expect(unlogged.registers.find((x) => x.pcr === PCR_OF.configuration)?.replayed).not.toBe(
          unlogged.registers.find((x) => x.pcr === PCR_OF.configuration)?.actual,
        );
      });
    });
  }

  it('reports a torn last line, and refuses a damaged log with where it is damaged', async () => {
    const r = new SoftwareRegister(join(scratch(), 'register.json'));
    const log = new EventLog(join(scratch(), 'event-log.jsonl'));
    await measure({ register: r, log, component: 'os', data: Buffer.from('os'), description: 'os' });
    appendFileSync(log.file, '{"seq":2,"pc');
    expect(log.read()).toMatchObject({ tornTail: true });
    expect((await checkMeasurements(r, log)).ok).toBe(true);
    writeFileSync(log.file, 'not json\n');
    expect(() => log.read()).toThrow(/line 1 is not JSON: the event log is damaged/);
    writeFileSync(log.file, JSON.stringify({ seq: 1, pcr: 99 }) + '\n');
    expect(() => log.read()).toThrow(/line 1: pcr is not 0–23/);
  });

  it('`rampart-agent measure` and `measurements`: logged, replayed, and a forged log exits 1', async () => {
    const bin = fileURLToPath(new URL('../../dist/bin/rampart-agent.js', import.meta.url));
    const dataDir = scratch();
    const image = join(dataDir, 'app.bin');
    writeFileSync(image, 'application image');
    // A TPM just reset, as at boot: the other tests have extended this file's swtpm already.
    const fresh = await startSwtpm();
    stops.push(() => fresh.stop());
    const env = {
      PATH: process.env.PATH ?? '',
      RAMPART_AGENT_TRUST_ANCHOR: 'tpm',
      RAMPART_AGENT_TPM_TCTI: fresh.tcti,
    };
    const run = promisify(execFile);
    const agent = (...args: string[]) =>
      run(process.execPath, [bin, '--data-dir', dataDir, ...args], { env });
    const measured = JSON.parse((await agent('--json', 'measure', 'application', image)).stdout);
    expect(measured).toMatchObject({
      seq: 1,
      pcr: PCR_OF.application,
      register: 'tpm',
      description: 'app.bin',
    });
    const shown = JSON.parse((await agent('--json', 'measurements')).stdout);
    expect(shown).toMatchObject({ ok: true, register: 'tpm', events: 1 });
    await expect(agent('measure', 'kernel', image)).rejects.toMatchObject({ code: 2 });
    // Edit the log: the check fails and says so.
    const logFile = join(dataDir, 'measurements', 'event-log.jsonl');
    writeFileSync(
      logFile,
      readFileSync(logFile, 'utf8').replace(/"digest":"[0-9a-f]{8}/, '"digest":"00000000'),
    );
    const failed = await agent('measurements').catch((e: { code: number; stdout: string }) => e);
    expect(failed).toMatchObject({ code: 1 });
    expect((failed as { stdout: string }).stdout).toMatch(/DOES NOT match the log/);
  });
});
