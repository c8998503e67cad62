/**
 * The values made for the last few keys, most recently used kept: for work that gives the same
 * result for the same input and is worth not repeating on a small device (parsing a certificate
 * file read again unchanged, building a TLS context from the same key, certificate and CA). Only
 * successes are kept: a `make` that throws throws again next time. Every caller of a key gets the
 * same value, so what is kept should not be changed by them.
 */
export class RecentMemo<T> {
  private readonly entries = new Map<string, T>();

  constructor(private readonly max: number) {}

  get(key: string, make: (key: string) => T): T {
    const hit = this.entries.get(key);
    if (hit !== undefined) {
      // Most recently used last: the first entry is the one to drop.
      this.entries.delete(key);
      this.entries.set(key, hit);
      return hit;
    }
    const value = make(key);
    this.entries.set(key, value);
    if (this.entries.size > this.max) this.entries.delete(this.entries.keys().next().value!);
    return value;
  }
}
