import type { FleetQueryNode } from './ast.js';

/** Ids of the groups a query names (`group = ...`, `group in (...)`), each once, in order of appearance. */
export function referencedGroups(node: FleetQueryNode): string[] {
  const found = new Set<string>();
  const visit = (n: FleetQueryNode): void => {
    switch (n.type) {
      case 'and':
      case 'or':
        n.operands.forEach(visit);
        return;
      case 'not':
        visit(n.operand);
        return;
      case 'compare':
        if (n.field.kind === 'group') found.add(String(n.value));
        return;
      case 'in':
        if (n.field.kind === 'group') n.values.forEach((v) => found.add(String(v)));
        return;
      default:
        return;
    }
  };
  visit(node);
  return [...found];
}
