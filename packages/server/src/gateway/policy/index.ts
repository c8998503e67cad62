/**
 * The gateway's policy engine: compile the policies attached to a device, then decide each connect,
 * publish, subscribe and delivery; lint documents for statements that do not say what they seem to.
 * The language is in `@rampart/shared/policy` and docs/policy.md.
 */
export {
  CompiledPolicy,
  compilePolicies,
  describeStatement,
  simulatePolicies,
  type AttachedPolicy,
  type Decision,
  type DecisionEffect,
  type DecisionStatement,
  type DeviceContext,
  type Explanation,
  type PolicyAttachment,
} from './engine.js';
export { FINDING_CODES, lintPolicy, type Finding, type FindingCode } from './lint.js';
export { covers, intersects, matchesTopic, topicFilterProblem, topicNameProblem } from './topics.js';
export { TopicTrie } from './trie.js';
