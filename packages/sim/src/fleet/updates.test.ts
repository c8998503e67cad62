import { describe, expect, it } from 'vitest';
import { describeUpdateFaults, noUpdateFaults, parseUpdateFaults } from './updates.js';

describe('update faults', () => {
  it('parses shares of installs and named devices, and writes them back the same way', () => {
    const f = parseUpdateFaults('self-test=10%, crash-after-boot=sim-0002+sim-0005,power-loss=2.5%');
    expect(f).toEqual({
      'self-test': { percent: 10, devices: [] },
      'crash-after-boot': { percent: 0, devices: ['sim-0002', 'sim-0005'] },
      'power-loss': { percent: 2.5, devices: [] },
    });
    expect(parseUpdateFaults(describeUpdateFaults(f))).toEqual(f);
    expect(parseUpdateFaults('self-test=5%,self-test=sim-0001')['self-test']).toEqual({
      percent: 5,
      devices: ['sim-0001'],
    });
    expect(parseUpdateFaults('')).toEqual(noUpdateFaults());
    expect(describeUpdateFaults(noUpdateFaults())).toBe('none');
  });

  it('refuses unknown faults, shares over 100%, two shares and values that are neither', () => {
    expect(() => parseUpdateFaults('meltdown=5%')).toThrow(
      'unknown update fault "meltdown"; choose from self-test, crash-after-boot, power-loss',
    );
    expect(() => parseUpdateFaults('self-test=101%')).toThrow('a share is at most 100%');
    expect(() => parseUpdateFaults('self-test=5%,self-test=6%')).toThrow('"self-test" has two shares');
    expect(() => parseUpdateFaults('power-loss')).toThrow('give a share of installs');
    expect(() => parseUpdateFaults('power-loss=-5%')).toThrow('give a share of installs');
    expect(() => parseUpdateFaults('power-loss=a b')).toThrow('give a share of installs');
  });
});
