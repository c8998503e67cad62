/**
 * Syntax tree of a fleet query. Nodes carry no source positions, so that two queries that differ only
 * in spelling (whitespace, keyword case, quote style, redundant parentheses) have equal trees.
 */

/** Device properties a query can test, as named in the API. */
export type DeviceFieldName =
  'id' | 'model' | 'hardwareRevision' | 'serial' | 'status' | 'createdAt' | 'updatedAt' | 'statusChangedAt';

export type FieldRef =
  | { kind: 'device'; name: DeviceFieldName }
  /** `attributes.<name>`; `name` matches ATTRIBUTE_NAME_PATTERN. */
  | { kind: 'attribute'; name: string }
  /** `group`: membership, including descendant groups and dynamic groups. */
  | { kind: 'group' };

export type FleetQueryValue = string | number | boolean;

export type CompareOperator = '=' | '!=' | '<' | '<=' | '>' | '>=';

/** `field <op> value` */
export interface CompareNode {
  type: 'compare';
  field: FieldRef;
  op: CompareOperator;
  value: FleetQueryValue;
}

/** `field in (v1, v2, ...)`, or `not in` when `negated`. `values` is never empty. */
export interface InNode {
  type: 'in';
  field: FieldRef;
  values: FleetQueryValue[];
  negated: boolean;
}

/** `field like "glob"` (`*` any run of characters, `?` one character), or `not like`. */
export interface LikeNode {
  type: 'like';
  field: FieldRef;
  pattern: string;
  negated: boolean;
}

/** `attributes.<name> exists` (also `hardwareRevision` and `serial`), or `not exists`. */
export interface ExistsNode {
  type: 'exists';
  field: FieldRef;
  negated: boolean;
}

export interface NotNode {
  type: 'not';
  operand: FleetQueryNode;
}

/**
 * `a and b and c`: a chain is one node with all operands; a parenthesized chain inside another of the
 * same kind stays a nested node. Always at least two operands.
 */
export interface AndNode {
  type: 'and';
  operands: FleetQueryNode[];
}

export interface OrNode {
  type: 'or';
  operands: FleetQueryNode[];
}

export type ConditionNode = CompareNode | InNode | LikeNode | ExistsNode;
export type FleetQueryNode = ConditionNode | NotNode | AndNode | OrNode;
