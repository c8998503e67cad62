/**
 * The gateway's policy language: documents of allow and deny statements over MQTT actions and
 * topic patterns, with `${device.…}` variables. The server compiles and decides
 * (`server/src/gateway/policy`). See docs/policy.md.
 */
export { DEFAULT_POLICY, QUARANTINE_TOPICS } from './defaults.js';
export {
  POLICY_ATTRIBUTE_NAME_PATTERN,
  POLICY_VARIABLES,
  formatVariable,
  isLiteralLevelValue,
  parseResource,
  type ParseResourceResult,
  type ParsedResource,
  type ResourceProblem,
  type PolicyVariable,
  type ResourceLevel,
} from './resource.js';
export {
  MAX_POLICY_STATEMENTS,
  MAX_RESOURCE_LENGTH,
  MAX_STATEMENT_RESOURCES,
  POLICY_ACTIONS,
  POLICY_EFFECTS,
  POLICY_LANGUAGE_VERSION,
  PolicyAction,
  PolicyDocument,
  PolicyStatement,
  type PolicyEffect,
} from './schema.js';
export { validatePolicyDocument, type PolicyFieldError, type PolicyValidationResult } from './validate.js';
