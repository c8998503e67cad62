import { Type, type Static } from '@sinclair/typebox';

/**
 * Device shadows: the state an operator wants (`desired`), the state the device last reported
 * (`reported`) and their difference (`delta`), with one version that every change increments.
 * The same merge and delta rules run on the server and, later, in the agent. Topics and payloads
 * are documented in docs/protocol.md.
 */
export type ShadowState = { [key: string]: ShadowValue };
export type ShadowValue = string | number | boolean | null | ShadowValue[] | ShadowState;

export const SHADOW_LIMITS = { bytes: 16 * 1024, depth: 6 } as const;

/** Reserved topics of a device's shadow. */
export const shadowTopics = (deviceId: string) => {
  const base = `$rampart/devices/${deviceId}/shadow`;
  return {
    base,
    get: `${base}/get`,
    getAccepted: `${base}/get/accepted`,
    update: `${base}/update`,
    updateAccepted: `${base}/update/accepted`,
    updateRejected: `${base}/update/rejected`,
    delta: `${base}/update/delta`,
  };
};

const JsonObject = Type.Record(Type.String(), Type.Unknown());

export const ShadowDocument = Type.Object(
  {
    deviceId: Type.String(),
    version: Type.Integer({ minimum: 0, description: 'Incremented by every change; 0 before the first.' }),
    state: Type.Object({
      desired: JsonObject,
      reported: JsonObject,
      delta: JsonObject,
    }),
    updatedAt: Type.Union([Type.String(), Type.Null()]),
    desiredUpdatedAt: Type.Union([Type.String(), Type.Null()]),
    reportedUpdatedAt: Type.Union([Type.String(), Type.Null()]),
  },
  { additionalProperties: false },
);
export type ShadowDocument = Static<typeof ShadowDocument>;

export const UpdateDesiredBody = Type.Object(
  {
    desired: Type.Record(Type.String(), Type.Unknown(), {
      description: 'A JSON merge patch (RFC 7396) over the desired state: `null` removes a key.',
    }),
    version: Type.Optional(
      Type.Integer({
        minimum: 0,
        description: 'Apply only if the shadow still has this version (else 409).',
      }),
    ),
  },
  { additionalProperties: false },
);
export type UpdateDesiredBody = Static<typeof UpdateDesiredBody>;

function isObject(v: unknown): v is ShadowState {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** RFC 7396 JSON merge patch. */
export function mergePatch(target: ShadowState, patch: ShadowState): ShadowState {
  const out: ShadowState = { ...target };
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else if (isObject(v)) out[k] = mergePatch(isObject(out[k]) ? out[k] : {}, v);
    else out[k] = v;
  }
  return out;
}

function equal(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((x, i) => equal(x, b[i]));
  if (isObject(a) && isObject(b)) {
    const ka = Object.keys(a);
    return ka.length === Object.keys(b).length && ka.every((k) => equal(a[k], b[k]));
  }
  return false;
}

/** What the device still has to do: every desired value that the reported state does not have. */
export function shadowDelta(desired: ShadowState, reported: ShadowState): ShadowState {
  const out: ShadowState = {};
  for (const [k, v] of Object.entries(desired)) {
    const r = reported[k];
    if (isObject(v) && isObject(r)) {
      const inner = shadowDelta(v, r);
      if (Object.keys(inner).length) out[k] = inner;
    } else if (!equal(v, r)) out[k] = v;
  }
  return out;
}

/** Why a state cannot be stored (not an object, too large, too deep), or null. */
export function shadowStateProblem(state: unknown, what: string): string | null {
  if (!isObject(state)) return `${what} must be a JSON object`;
  const size = Buffer.byteLength(JSON.stringify(state));
  if (size > SHADOW_LIMITS.bytes) return `${what} is ${size} bytes; at most ${SHADOW_LIMITS.bytes} are kept`;
  const depth = (v: unknown): number => (isObject(v) ? 1 + Math.max(0, ...Object.values(v).map(depth)) : 0);
  if (depth(state) > SHADOW_LIMITS.depth) return `${what} nests deeper than ${SHADOW_LIMITS.depth} levels`;
  return null;
}
