import { Type, type Static } from '@sinclair/typebox';

export const Health = Type.Object({
  status: Type.String({ description: '`ok` or `degraded`.' }),
  version: Type.String(),
  checks: Type.Record(Type.String(), Type.String()),
});
export type Health = Static<typeof Health>;
