import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '@rampart/shared/logging';
import type { KeyStore } from '../../keystore/index.js';
import { startTestPlatform, type TestPlatform } from '../../test-support/platform.js';
import {
  enrollUpdateDevice,
  expectUpdateRefused,
  publishRelease,
  type UpdateDevice,
} from '../../test-support/update-device.js';
import { Director } from './director.js';
// The device side is the real agent code, talking to the real platform over mutual TLS.

const HOUR = 3_600_000;

describe(
  'director root expiry: re-signed before it expires, refused by devices once expired',
  { timeout: 60_000 },
  () => {
    let t: TestPlatform;
    const dirs: string[] = [];
    let rel: { path: string; sha256: string };
    let d: UpdateDevice;

    const db = () => t.platform.updates.storage.db;
    const roots = async () =>
      (await db().selectFrom('director_roots').select('document').orderBy('version').execute()).map((r) =>
        Director.parseRoot(r.document),
      );
    const pinnedVersion = () =>
      (
        JSON.parse(readFileSync(join(d.dataDir, 'updates', 'director', 'root.json'), 'utf8')) as {
          signed: { version: number };
        }
      ).signed.version;

    beforeAll(async () => {
      t = await startTestPlatform('sqlite', {
        'updates.development': true,
        'updates.maxArtifactBytes': 100_000,
        // A short root lifetime: the director root (and the release repository's) is due for re-signing after 1h.
        'updates.rootExpiry': '2h',
      });
      await t.call('POST', '/api/v1/device-models', { body: { id: 'DW100' } });
      rel = await publishRelease(
        t,
        'name=fw&version=1.0.0&model=DW100&releaseCounter=1&fileName=fw.bin',
        randomBytes(20_000),
      );
      d = await enrollUpdateDevice(t, { id: 'EXP-0001', model: 'DW100', dirs });
    });
    afterAll(async () => {
      await t?.close();
      for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
    });

    it('a device refuses an expired director root (nothing installed); after the upkeep re-signs it, the device walks to it and installs', async () => {
      expect((await d.client().check()).outcome).toBe('nothing-assigned');
      expect(pinnedVersion()).toBe(1);
      const [v1] = await roots();
      const expired = () => new Date(Date.parse(v1!.signed.expires) + 1000);
      expect(
        (await t.call('PUT', `/api/v1/devices/${d.id}/update-assignment`, { body: { path: rel.path } }))
          .status,
      ).toBe(200);

      // The director root the device pinned has expired and the director serves nothing newer: a frozen director.
      await expectUpdateRefused(
        d.client({ now: expired }).check(),
        new RegExp(
          `the director root expired at ${v1!.signed.expires}.*a frozen director.*nothing was installed`,
        ),
        d,
      );
      const state = d.installer.state();
      expect([state.slots.a, state.slots.b, state.install, state.pending]).toEqual([null, null, null, null]);

      // More than half of its lifetime left: the upkeep leaves the director root alone.
      expect(await t.platform.updates.refresh()).not.toContain('director-root');
      expect(await roots()).toHaveLength(1);
      // Less than half left: version 2 with the same keys and thresholds, a fresh expiry, signed by the held root key.
      const later = Date.now() + HOUR + 60_000;
      expect(await t.platform.updates.refresh(later)).toContain('director-root');
      const [, v2] = await roots();
      expect(v2!.signed.version).toBe(2);
      expect(v2!.signed.keys).toEqual(v1!.signed.keys);
      for (const role of ['root', 'targets'])
        expect(v2!.signed.roles[role]!.toJSON()).toEqual(v1!.signed.roles[role]!.toJSON());
      expect(Date.parse(v2!.signed.expires)).toBeGreaterThan(Date.parse(v1!.signed.expires));
      expect(Object.keys(v2!.signatures)).toEqual(v1!.signed.roles.root!.keyIDs);
      v1!.verifyDelegate('root', v2!);
      // Once: the new root is not due again.
      expect(await t.platform.updates.refresh(later)).not.toContain('director-root');
      expect(await roots()).toHaveLength(2);
      const audit = await t.call('GET', '/api/v1/audit/entries?action=director.root-resign');
      expect(audit.body.items).toEqual([
        expect.objectContaining({
          actor: 'system',
          target: 'director:root',
          outcome: 'success',
          details: expect.objectContaining({ version: 2, previousExpires: v1!.signed.expires }),
        }),
      ]);

      // The same device, at the same (late) time, walks to version 2 and proceeds.
      d.logs.length = 0;
      expect(await d.client({ now: expired }).check()).toMatchObject({
        outcome: 'installed',
        target: rel.path,
      });
      expect(pinnedVersion()).toBe(2);
      expect(d.logs.some((l) => l.includes('"update.director-root"'))).toBe(true);
    });

    it('warns and does nothing when the key store does not hold the director root key', async () => {
      const real = t.platform.keys;
      const keys = new Proxy(real, {
        get(target, prop, receiver) {
          if (prop === 'get')
            return (label: string) =>
              label.startsWith('director-root') ? Promise.resolve(null) : real.get(label);
          const v = Reflect.get(target, prop, receiver) as unknown;
          return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
        },
      }) as KeyStore;
      const lines: string[] = [];
      const logger = createLogger({
        level: 'info',
        destination: { write: (l: string) => void lines.push(l) },
      });
      const director = new Director(
        t.platform.updates.storage,
        keys,
        t.platform.audit,
        t.platform.updates.director.settings,
        logger,
      );
      const newest = (await roots()).at(-1)!;
      expect(await director.resignRootIfExpiring(Date.parse(newest.signed.expires) - 60_000)).toBeNull();
      expect(await roots()).toHaveLength(2);
      const warning = lines.find((l) => l.includes('"director.root-expiring"'));
      expect(warning).toBeDefined();
      expect(warning).toContain(`will expire on ${newest.signed.expires}`);
      expect(warning).toContain('restore the director root keys');
    });
  },
);
