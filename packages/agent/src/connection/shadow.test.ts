import { describe, expect, it, vi } from 'vitest';
import type { ShadowState } from '@rampart/shared/shadow';
import { FakeLink } from '../test-support/fake-link.js';
import { ShadowSync } from './shadow.js';

const until = async (check: () => boolean, ms = 2000) => {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
};

describe('shadow sync', () => {
  it('reads the shadow on connect, applies the delta through the handler and reports with the version it read', async () => {
    const link = new FakeLink();
    link.setDesired({ led: 'on', config: { rate: 5 } });
    link.shadow.reported = { led: 'off', config: { rate: 5 } };
    const seen: ShadowState[] = [];
    const sync = new ShadowSync(link, {
      onDelta: (delta) => {
        seen.push(delta);
      },
    });
    link.goOnline();
    await until(() => link.shadow.version === 2);
    expect(seen).toEqual([{ led: 'on' }]);
    expect(link.updates()).toEqual([
      { state: { reported: { led: 'on' } }, version: 1, clientToken: expect.any(String) },
    ]);
    expect(sync.snapshot).toMatchObject({
      version: 2,
      reported: { led: 'on', config: { rate: 5 } },
      delta: {},
    });
    sync.stop();
  });

  it('handles deltas pushed while connected; the handler decides what is reported', async () => {
    const link = new FakeLink();
    const sync = new ShadowSync(link, {
      // This device caps the rate at 10.
      onDelta: (delta) => ('rate' in delta ? { rate: Math.min(Number(delta.rate), 10) } : undefined),
    });
    link.goOnline();
    await until(() => link.sentNow.length === 1); // the get
    await until(() => sync.snapshot !== null);
    link.setDesired({ rate: 50 });
    await until(() => link.updates().length === 1 && link.shadow.version === 2);
    expect(link.shadow.reported).toEqual({ rate: 10 });
    expect(link.updates()[0]).toMatchObject({ state: { reported: { rate: 10 } }, version: 1 });
    sync.stop();
  });

  it('on a version conflict reads the shadow again, shows the handler the new delta, and retries', async () => {
    const link = new FakeLink();
    const deltas: ShadowState[] = [];
    const sync = new ShadowSync(link, {
      onDelta: (delta) => {
        deltas.push(delta);
      },
    });
    link.goOnline();
    await until(() => sync.snapshot !== null);
    // The operator changes the desired state while the report is on its way: the report is stale.
    link.beforeUpdate = () => {
      link.isOnline = false; // no delta push: the agent must find out from the 409
      link.setDesired({ mode: 'eco' });
      link.isOnline = true;
    };
    await sync.report({ firmware: '1.2.3' });
    const updates = link.updates();
    expect(updates.map((u) => u.version)).toEqual([0, 1]);
    expect(deltas).toEqual([{ mode: 'eco' }]);
    expect(link.shadow.reported).toEqual({ firmware: '1.2.3', mode: 'eco' });
    expect(sync.snapshot).toMatchObject({ version: link.shadow.version, delta: {} });
    sync.stop();
  });

  it('keeps reports made while offline, merges them, sends them after reconnect and skips values already reported', async () => {
    const link = new FakeLink();
    link.shadow.reported = { agent: { version: '0.1.0' } };
    link.shadow.version = 4;
    const sync = new ShadowSync(link);
    const a = sync.report({ temp: 20, agent: { version: '0.1.0' } });
    const b = sync.report({ temp: 21, door: 'closed' });
    expect(link.sentNow).toEqual([]);
    link.goOnline();
    await Promise.all([a, b]);
    expect(link.updates()).toEqual([
      { state: { reported: { temp: 21, door: 'closed' } }, version: 4, clientToken: expect.any(String) },
    ]);
    // Nothing new: resolved without an update.
    await sync.report({ temp: 21 });
    expect(link.updates()).toHaveLength(1);
    sync.stop();
  });

  it('sends a pending report again after the connection drops while waiting for the answer', async () => {
    const link = new FakeLink();
    const sync = new ShadowSync(link, { answerTimeoutMs: 5000 });
    link.goOnline();
    await until(() => sync.snapshot !== null);
    link.beforeUpdate = () => link.goOffline(); // the gateway never answers this one
    const reported = sync.report({ state: 'ready' });
    await until(() => !link.isOnline);
    link.goOnline();
    await reported;
    expect(link.shadow.reported).toEqual({ state: 'ready' });
    sync.stop();
  });

  it('rejects a report the gateway refuses (400/403) with its reason, and carries on', async () => {
    const link = new FakeLink();
    const sync = new ShadowSync(link);
    link.goOnline();
    await until(() => sync.snapshot !== null);
    link.refuseNext = { code: 400, message: 'reported is 20000 bytes; at most 16384 are kept' };
    await expect(sync.report({ big: 'x' })).rejects.toMatchObject({
      code: 'SHADOW_REJECTED',
      status: 400,
      message: expect.stringMatching(/refused the shadow report \(400\): reported is 20000 bytes/),
    });
    await sync.report({ small: 1 });
    expect(link.shadow.reported).toEqual({ small: 1 });
    sync.stop();
  });

  it('reports nothing when the handler throws, and does not stop syncing', async () => {
    const link = new FakeLink();
    link.setDesired({ led: 'on' });
    const handler = vi.fn(() => {
      throw new Error('the LED driver is not loaded');
    });
    const sync = new ShadowSync(link, { onDelta: handler });
    link.goOnline();
    await until(() => handler.mock.calls.length === 1);
    await new Promise((r) => setTimeout(r, 20));
    expect(link.updates()).toEqual([]);
    sync.onDelta((delta) => delta);
    link.setDesired({ led: 'blink' });
    await until(() => link.updates().length === 1);
    expect(link.updates()[0]!.state.reported).toEqual({ led: 'blink' });
    sync.stop();
  });

  it('rejects pending reports when stopped', async () => {
    const link = new FakeLink();
    const sync = new ShadowSync(link);
    const pending = sync.report({ a: 1 });
    sync.stop();
    await expect(pending).rejects.toMatchObject({ code: 'STOPPED' });
    await expect(sync.report({ a: 2 })).rejects.toMatchObject({ code: 'STOPPED' });
  });
});
