/**
 * How a virtual device behaves. The profiles are deliberately few and named after what an operator
 * sees in a real fleet: devices that behave, devices that talk too much, devices that keep dying,
 * and devices that have been taken over.
 */
export const PROFILE_NAMES = ['normal', 'chatty', 'crashy', 'compromised'] as const;
export type ProfileName = (typeof PROFILE_NAMES)[number];

export interface Profile {
  name: ProfileName;
  summary: string;
  /** Telemetry period (the operator can change it through the shadow's desired `telemetryEveryMs`). */
  telemetryEveryMs: number;
  /** Size of one telemetry message, bytes (JSON, padded). */
  telemetryBytes: number;
  /** A burst of this many messages at once, every `burstEveryMs` (more than the gateway's per-second limit). */
  burst: { messages: number; everyMs: number } | null;
  /** The device process dies (no MQTT DISCONNECT) after a random uptime and comes back after `downMs`. */
  crash: { meanUptimeMs: number; downMs: [min: number, max: number] } | null;
  /** How often a taken-over device tries something its policy forbids. */
  attackEveryMs: number | null;
}

export const PROFILES: Record<ProfileName, Profile> = {
  normal: {
    name: 'normal',
    summary: 'telemetry every 5 s, answers commands, follows its shadow',
    telemetryEveryMs: 5000,
    telemetryBytes: 120,
    burst: null,
    crash: null,
    attackEveryMs: null,
  },
  chatty: {
    name: 'chatty',
    summary: 'telemetry 20 times a second, 2 KB each, and now and then a burst over the rate limit',
    telemetryEveryMs: 50,
    telemetryBytes: 2048,
    burst: { messages: 150, everyMs: 30_000 },
    crash: null,
    attackEveryMs: null,
  },
  crashy: {
    name: 'crashy',
    summary: 'like normal, but dies without a goodbye about every 30 s and restarts after 2-5 s',
    telemetryEveryMs: 5000,
    telemetryBytes: 120,
    burst: null,
    crash: { meanUptimeMs: 30_000, downMs: [2000, 5000] },
    attackEveryMs: null,
  },
  compromised: {
    name: 'compromised',
    summary:
      "like normal, but every 10 s tries what its policy forbids: other devices' topics, '#', its desired shadow",
    telemetryEveryMs: 5000,
    telemetryBytes: 120,
    burst: null,
    crash: null,
    attackEveryMs: 10_000,
  },
};

export interface ProfileShare {
  profile: ProfileName;
  weight: number;
}

/**
 * Parse `--profile`: one profile name (`crashy`), or a mix of weighted names
 * (`normal=90,crashy=5,compromised=5`; weights are relative, a missing weight is 1).
 */
export function parseProfileMix(text: string): ProfileShare[] {
  const shares: ProfileShare[] = [];
  for (const part of text.split(',')) {
    const [name = '', weightText, ...rest] = part.trim().split('=');
    if (!(PROFILE_NAMES as readonly string[]).includes(name))
      throw new Error(`unknown profile "${name}"; choose from ${PROFILE_NAMES.join(', ')}`);
    if (rest.length > 0 || (weightText !== undefined && !/^\d+(\.\d+)?$/.test(weightText)))
      throw new Error(`"${part.trim()}": a weight is a number, as in ${name}=10`);
    const weight = weightText === undefined ? 1 : Number(weightText);
    if (!(weight > 0)) throw new Error(`"${part.trim()}": the weight must be above 0`);
    if (shares.some((s) => s.profile === name)) throw new Error(`profile "${name}" is named twice`);
    shares.push({ profile: name as ProfileName, weight });
  }
  return shares;
}

/**
 * Give each of `count` devices a profile, in proportion to the weights (largest remainder, so the
 * counts add up exactly), interleaved so that any prefix of the fleet has about the same mix.
 */
export function assignProfiles(count: number, mix: readonly ProfileShare[]): ProfileName[] {
  const total = mix.reduce((a, s) => a + s.weight, 0);
  const exact = mix.map((s) => (count * s.weight) / total);
  const counts = exact.map(Math.floor);
  const order = exact
    .map((e, i) => ({ i, rest: e - Math.floor(e) }))
    .sort((a, b) => b.rest - a.rest || a.i - b.i);
  for (let k = 0; k < count - counts.reduce((a, c) => a + c, 0); k++) counts[order[k]!.i]!++;
  const out: ProfileName[] = [];
  const given = counts.map(() => 0);
  for (let n = 0; n < count; n++) {
    // The profile furthest behind its share so far goes next.
    let best = -1;
    let bestLag = -Infinity;
    counts.forEach((c, i) => {
      if (given[i]! >= c) return;
      const lag = ((n + 1) * c) / count - given[i]!;
      if (lag > bestLag) {
        bestLag = lag;
        best = i;
      }
    });
    given[best]!++;
    out.push(mix[best]!.profile);
  }
  return out;
}

/** The profile with every period divided by `speed` (10: ten times as much happens per minute). */
export function spedUp(profile: Profile, speed: number): Profile {
  if (!(speed > 0)) throw new Error(`speed must be above 0 (got ${speed})`);
  if (speed === 1) return profile;
  const t = (ms: number) => Math.max(1, Math.round(ms / speed));
  return {
    ...profile,
    telemetryEveryMs: t(profile.telemetryEveryMs),
    burst: profile.burst && { ...profile.burst, everyMs: t(profile.burst.everyMs) },
    crash: profile.crash && {
      meanUptimeMs: t(profile.crash.meanUptimeMs),
      downMs: [t(profile.crash.downMs[0]), t(profile.crash.downMs[1])],
    },
    attackEveryMs: profile.attackEveryMs && t(profile.attackEveryMs),
  };
}
