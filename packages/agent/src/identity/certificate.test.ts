import { beforeAll, describe, expect, it } from 'vitest';
import { TestPki, type TestCa } from '../test-support/pki.js';
import { PemMemo, parsePinnedRoots } from './certificate.js';

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

describe('PemMemo', () => {
  it('keeps the last few texts, most recently used last, and never what failed to parse', () => {
    const memo = new PemMemo<{ text: string }>(2);
    let parses = 0;
    const parse = (text: string) => {
      parses++;
      if (text === 'bad') throw new Error('bad text');
      return { text };
    };
    const a = memo.get('a', parse);
    expect(memo.get('a', parse)).toBe(a);
    memo.get('b', parse);
    memo.get('a', parse); // a is now the most recent
    memo.get('c', parse); // drops b
    expect(parses).toBe(3);
    expect(memo.get('a', parse)).toBe(a);
    memo.get('b', parse);
    expect(parses).toBe(4);
    expect(() => memo.get('bad', parse)).toThrow('bad text');
    expect(() => memo.get('bad', parse)).toThrow('bad text');
    expect(parses).toBe(6);
  });
});
