import { AgentError } from '../errors.js';

/** Whether an MQTT topic filter (with `+` and `#` wildcards) matches a topic name. */
export function topicMatches(filter: string, topic: string): boolean {
  const f = filter.split('/');
  const t = topic.split('/');
  // MQTT 3.1.1 §4.7.2: wildcards at the first level do not match topics starting with `$`.
  if (topic.startsWith('$') && (f[0] === '+' || f[0] === '#')) return false;
  for (let i = 0; i < f.length; i++) {
    const level = f[i]!;
    if (level === '#') return true;
    if (i >= t.length) return false;
    if (level !== '+' && level !== t[i]) return false;
  }
  return f.length === t.length;
}

/** Refuse a topic no broker accepts for PUBLISH, before it is queued (it would never be delivered). */
export function checkPublishTopic(topic: string): void {
  const problem =
    topic.length === 0
      ? 'is empty'
      : /[+#]/.test(topic)
        ? 'contains a wildcard (+ or #), which only subscriptions may use'
        : topic.includes('\u0000')
          ? 'contains a NUL character'
          : Buffer.byteLength(topic, 'utf8') > 65_535
            ? 'is longer than 65535 bytes'
            : null;
  if (problem) throw new AgentError('MESSAGE_INVALID', `cannot publish: the topic "${topic}" ${problem}`);
}

/** Refuse a subscription filter that is not valid MQTT. */
export function checkTopicFilter(filter: string): void {
  const levels = filter.split('/');
  const bad =
    filter.length === 0 ||
    levels.some(
      (l, i) => (l.includes('#') && (l !== '#' || i !== levels.length - 1)) || (l.includes('+') && l !== '+'),
    );
  if (bad) throw new AgentError('MESSAGE_INVALID', `"${filter}" is not a valid MQTT topic filter`);
}
