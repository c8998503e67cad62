/**
 * Target paths: `segment/segment/file`, each segment safe as a file name, no `..`, at most 200
 * characters. The first segment is usually the model or product line, which delegations match on.
 * (Its own module so that both the target schema and the delta schema it embeds can use it.)
 */
export const TARGET_PATH =
  /^(?!.*(^|\/)\.\.?(\/|$))[A-Za-z0-9][A-Za-z0-9._+-]*(\/[A-Za-z0-9][A-Za-z0-9._+-]*)*$/;

export function isTargetPath(path: string): boolean {
  return path.length <= 200 && TARGET_PATH.test(path);
}
