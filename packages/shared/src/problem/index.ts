import { Type, type Static } from '@sinclair/typebox';

/**
 * RFC 9457 problem details as served by the management API. `type` is a stable URN per problem
 * kind (documented in docs/api.md); `code` repeats it in a form that is easy to switch on.
 */
export const PROBLEM_TYPE_PREFIX = 'urn:rampart:problem:';

export const ProblemFieldError = Type.Object({
  field: Type.String({ description: 'Dotted path of the offending field, e.g. `attributes.region`.' }),
  message: Type.String(),
});

export const Problem = Type.Object(
  {
    type: Type.String({ description: 'URN identifying the kind of problem.' }),
    title: Type.String(),
    status: Type.Integer(),
    detail: Type.Optional(Type.String()),
    instance: Type.Optional(Type.String()),
    code: Type.String(),
    errors: Type.Optional(Type.Array(ProblemFieldError)),
  },
  { $id: 'Problem', description: 'RFC 9457 problem details.' },
);
export type Problem = Static<typeof Problem>;

export const PROBLEM_CONTENT_TYPE = 'application/problem+json';

export function problemType(code: string): string {
  return PROBLEM_TYPE_PREFIX + code.toLowerCase().replace(/_/g, '-');
}
