import { generateKeyPairSync, sign } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { signDocument } from '../provisioning/signed.js';
import { receiptProblem, verifyReceipt, RECEIPT_TYPE, type UpdateReceipt } from './receipt.js';

const device = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const signer = {
  publicKey: device.publicKey,
  sign: async (data: Uint8Array) => sign('sha256', data, device.privateKey),
};

const receipt: UpdateReceipt = {
  type: RECEIPT_TYPE,
  version: 1,
  id: '0123456789abcdef0123456789abcdef',
  deviceId: 'dw-0001',
  outcome: 'committed',
  detail: 'self-test passed in 40 ms',
  release: {
    name: 'app.bin',
    version: '2.0.0',
    kind: 'application',
    releaseCounter: 2,
    sha256: 'a'.repeat(64),
    length: 10,
  },
  slot: 'a',
  runningSlot: 'a',
  runningVersion: '2.0.0',
  bootAttempts: 1,
  counter: '2',
  counterStore: 'tpm',
  at: '2026-11-21T10:00:00.000Z',
};

describe('update receipts', () => {
  it('verifies a receipt signed by the device key, and only that one', async () => {
    const signed = await signDocument(receipt, signer);
    expect(receiptProblem(signed, device.publicKey)).toBeNull();
    expect(verifyReceipt(JSON.parse(JSON.stringify(signed)), device.publicKey).release.version).toBe('2.0.0');
    const other = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    expect(receiptProblem(signed, other.publicKey)).toMatch(/signed by key/);
    expect(() => verifyReceipt({ ...signed, bootAttempts: 0 }, device.publicKey)).toThrow(
      /changed after it was signed/,
    );
  });

  it('refuses receipts that do not make sense, before looking at the signature', async () => {
    const cases: [Partial<UpdateReceipt> & Record<string, unknown>, RegExp][] = [
      [{ outcome: 'rolled-back' }, /rolled-back receipt has no reason/],
      [{ reason: 'timeout' }, /committed receipt has a rollback reason/],
      [{ runningSlot: 'b' }, /runs another slot/],
      [{ outcome: 'rolled-back', reason: 'bored' as never }, /reason/],
      [{ counter: '-1' }, /counter/],
      [{ type: 'rampart-batch-manifest' as never }, /type/],
    ];
    for (const [change, message] of cases) {
      const signed = await signDocument({ ...receipt, ...change }, signer);
      expect(receiptProblem(signed, device.publicKey), JSON.stringify(change)).toMatch(message);
    }
    expect(receiptProblem(receipt, device.publicKey)).toMatch(/not an update receipt: signature/);
    expect(receiptProblem('receipt', device.publicKey)).toMatch(/not an update receipt/);
  });
});
