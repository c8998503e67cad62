import type { FieldRef, FleetQueryNode, FleetQueryValue } from './ast.js';

/**
 * Print a query in canonical form: lower-case keywords, single spaces, double-quoted strings and
 * parentheses only where the tree needs them. `parseFleetQuery(formatFleetQuery(node))` equals `node`.
 */
export function formatFleetQuery(node: FleetQueryNode): string {
  switch (node.type) {
    case 'or':
      return node.operands
        .map((o) => (o.type === 'or' ? `(${formatFleetQuery(o)})` : formatFleetQuery(o)))
        .join(' or ');
    case 'and':
      return node.operands
        .map((o) => (o.type === 'or' || o.type === 'and' ? `(${formatFleetQuery(o)})` : formatFleetQuery(o)))
        .join(' and ');
    case 'not':
      return node.operand.type === 'or' || node.operand.type === 'and'
        ? `not (${formatFleetQuery(node.operand)})`
        : `not ${formatFleetQuery(node.operand)}`;
    case 'compare':
      return `${formatField(node.field)} ${node.op} ${formatValue(node.value)}`;
    case 'in':
      return `${formatField(node.field)} ${node.negated ? 'not in' : 'in'} (${node.values.map(formatValue).join(', ')})`;
    case 'like':
      return `${formatField(node.field)} ${node.negated ? 'not like' : 'like'} ${JSON.stringify(node.pattern)}`;
    case 'exists':
      return `${formatField(node.field)} ${node.negated ? 'not exists' : 'exists'}`;
  }
}

export function formatField(field: FieldRef): string {
  return field.kind === 'attribute'
    ? `attributes.${field.name}`
    : field.kind === 'group'
      ? 'group'
      : field.name;
}

function formatValue(value: FleetQueryValue): string {
  return typeof value === 'string' ? JSON.stringify(value) : String(value);
}
