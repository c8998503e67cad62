import { beforeAll, describe, expect, it } from 'vitest';
import { TestPki, type TestCa } from '../test-support/pki.js';
import { parsePinnedRoots } from './certificate.js';

let pki: TestPki;
let root: TestCa;
let root2: TestCa;
let issuing: TestCa;

beforeAll(() => {
  pki = new TestPki();
  root = pki.rootCa('Memo Root CA');
  root2 = pki.rootCa('Memo Root CA 2');
  issuing = pki.issuingCa('Memo Issuing CA', root);
});

describe('pinned roots', () => {
  it('are parsed once per text: the same roots again, in an array of the caller’s own', () => {
    const first = parsePinnedRoots(root.pem);
    expect(first.map((r) => r.info.subject)).toEqual(['CN=Memo Root CA']);
    first.pop();
    const again = parsePinnedRoots(root.pem);
    expect(again).toHaveLength(1);
    expect(again[0]).toBe(parsePinnedRoots(root.pem)[0]);
    expect(Object.isFrozen(again[0]!.info)).toBe(true);
    // Another text (another root, or two of them) is parsed for itself.
    expect(parsePinnedRoots(root2.pem).map((r) => r.info.subject)).toEqual(['CN=Memo Root CA 2']);
    expect(parsePinnedRoots(root.pem + root2.pem).map((r) => r.info.subject)).toEqual([
      'CN=Memo Root CA',
      'CN=Memo Root CA 2',
    ]);
  });

  it('refuses what is not a self-signed root each time, naming the file it was asked about', () => {
    expect(() => parsePinnedRoots(issuing.pem, 'a.pem')).toThrow(
      /a\.pem holds CN=Memo Issuing CA, which is not a self-signed root CA/,
    );
    expect(() => parsePinnedRoots(issuing.pem, 'b.pem')).toThrow(/b\.pem holds CN=Memo Issuing CA/);
    expect(() => parsePinnedRoots('', 'c.pem')).toThrow(/c\.pem holds no PEM certificate/);
  });
});
