/**
 * The fleet query language: selects devices by their properties, attributes and group membership,
 * e.g. `model = "DW100" and attributes.region = "eu" and status = "active"`. See docs/fleet-query.md.
 */
export type * from './ast.js';
export { formatField, formatFleetQuery } from './format.js';
export { FleetQuerySyntaxError } from './lexer.js';
export {
  FLEET_QUERY_FIELDS,
  MAX_QUERY_DEPTH,
  MAX_QUERY_LENGTH,
  TIME_FIELDS,
  isAttributeName,
  normalizeTimestamp,
  parseFleetQuery,
  type FleetQueryFieldName,
} from './parser.js';
export { referencedGroups } from './walk.js';
