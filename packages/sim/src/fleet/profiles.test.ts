import { describe, expect, it } from 'vitest';
import { PROFILES, assignProfiles, parseProfileMix, spedUp } from './profiles.js';

describe('profile mixes', () => {
  it('parses one name or weighted names', () => {
    expect(parseProfileMix('crashy')).toEqual([{ profile: 'crashy', weight: 1 }]);
    expect(parseProfileMix('normal=8, chatty=1.5,compromised')).toEqual([
      { profile: 'normal', weight: 8 },
      { profile: 'chatty', weight: 1.5 },
      { profile: 'compromised', weight: 1 },
    ]);
  });

  it('refuses unknown names, bad weights and repeats, saying what is wrong', () => {
    expect(() => parseProfileMix('evil')).toThrow(
      'unknown profile "evil"; choose from normal, chatty, crashy, compromised',
    );
    expect(() => parseProfileMix('normal=x')).toThrow('a weight is a number');
    expect(() => parseProfileMix('normal=0')).toThrow('above 0');
    expect(() => parseProfileMix('normal=1=2')).toThrow('a weight is a number');
    expect(() => parseProfileMix('normal,normal=2')).toThrow('named twice');
    expect(() => parseProfileMix('')).toThrow('unknown profile ""');
  });

  it('assigns exact counts in proportion, interleaved', () => {
    const mix = parseProfileMix('normal=7,chatty=1,crashy=1,compromised=1');
    const ten = assignProfiles(10, mix);
    const count = (list: string[], p: string) => list.filter((x) => x === p).length;
    expect([
      count(ten, 'normal'),
      count(ten, 'chatty'),
      count(ten, 'crashy'),
      count(ten, 'compromised'),
    ]).toEqual([7, 1, 1, 1]);
    // Not all the troublemakers at the end: the first half already has some.
    expect(ten.slice(0, 5).filter((p) => p !== 'normal').length).toBeGreaterThan(0);
    const odd = assignProfiles(7, parseProfileMix('normal=1,crashy=1'));
    expect([count(odd, 'normal'), count(odd, 'crashy')]).toEqual([4, 3]);
    expect(odd).toEqual(['normal', 'crashy', 'normal', 'crashy', 'normal', 'crashy', 'normal']);
    expect(assignProfiles(1, parseProfileMix('normal=1,compromised=3'))).toEqual(['compromised']);
  });

  it('speeds profiles up by dividing every period', () => {
    const fast = spedUp(PROFILES.crashy, 10);
    expect(fast.telemetryEveryMs).toBe(500);
    expect(fast.crash).toEqual({ meanUptimeMs: 3000, downMs: [200, 500] });
    expect(spedUp(PROFILES.compromised, 10).attackEveryMs).toBe(1000);
    expect(spedUp(PROFILES.chatty, 100).burst).toEqual({ messages: 150, everyMs: 300 });
    expect(spedUp(PROFILES.normal, 1)).toBe(PROFILES.normal);
    expect(() => spedUp(PROFILES.normal, 0)).toThrow('above 0');
  });
});
