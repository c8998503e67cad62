import type { ErrorObject } from 'ajv';
import { describeError, errorPath, validatorFor } from '../schema/index.js';
import { parseResource } from './resource.js';
import { PolicyDocument, POLICY_LANGUAGE_VERSION } from './schema.js';

/** One problem of a policy document: where (a dotted path such as `statements.1.resources.0`) and what. */
export interface PolicyFieldError {
  path: string;
  message: string;
}

export type PolicyValidationResult = { ok: true } | { ok: false; errors: PolicyFieldError[] };

/**
 * Check a policy document: its shape (the `PolicyDocument` schema) and the syntax of every resource
 * (wildcards, variables; connect resources are one level). Statements are numbered from 0, as in
 * the paths. Every problem is reported, not only the first.
 */
export function validatePolicyDocument(doc: unknown): PolicyValidationResult {
  const errors: PolicyFieldError[] = [];
  const seen = new Set<string>();
  const add = (path: string, message: string) => {
    const key = `${path}\u0000${message}`;
    if (seen.has(key)) return;
    seen.add(key);
    errors.push({ path, message });
  };

  const validate = validatorFor(PolicyDocument);
  if (!validate(doc)) {
    for (const e of validate.errors ?? []) add(errorPath(e) || '(document)', describe(e));
  }

  const statements = isObject(doc) && Array.isArray(doc.statements) ? (doc.statements as unknown[]) : [];
  statements.forEach((statement, i) => {
    if (!isObject(statement) || !Array.isArray(statement.resources)) return;
    const connect = Array.isArray(statement.actions) && statement.actions.includes('connect');
    (statement.resources as unknown[]).forEach((resource, j) => {
      if (typeof resource !== 'string' || resource.length === 0) return; // the schema said why
      const path = `statements.${i}.resources.${j}`;
      const parsed = parseResource(resource);
      if (!parsed.ok) {
        add(path, `'${resource}' ${parsed.message}`);
      } else if (connect && parsed.resource.levels.length > 1) {
        add(
          path,
          `'${resource}' has ${parsed.resource.levels.length} levels, but connect resources are client ids, one level without '/'; put connect in a statement of its own`,
        );
      }
    });
  });

  return errors.length === 0 ? { ok: true } : { ok: false, errors };
}

function describe(error: ErrorObject): string {
  const p = error.params as Record<string, unknown>;
  switch (error.keyword) {
    case 'const':
      return `must be '${POLICY_LANGUAGE_VERSION}'`;
    case 'uniqueItems': {
      const [a, b] = [Number(p.i), Number(p.j)].sort((x, y) => x - y);
      return `must not repeat an action (items ${a} and ${b} are the same)`;
    }
    default:
      return describeError(error);
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
