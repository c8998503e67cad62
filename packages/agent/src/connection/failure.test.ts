import { describe, expect, it } from 'vitest';
import { AgentError } from '../errors.js';
import { describeConnectFailure } from './failure.js';
import { topicMatches } from './topics.js';

const context = { url: 'mqtts://rampart.example:8883', deviceId: 'dw-0001', wasOnline: false };
const withCode = (code: string | number, message = 'x') => Object.assign(new Error(message), { code });

describe('describeConnectFailure', () => {
  it('turns CONNACK refusals into what happened and what to do next', () => {
    expect(describeConnectFailure(withCode(5), context)).toMatchObject({
      kind: 'not-authorized',
      refused: true,
      advice: expect.stringMatching(/revoked.*rampart device show dw-0001.*enroll/),
    });
    expect(describeConnectFailure(withCode(2), context)).toMatchObject({
      kind: 'identifier-rejected',
      refused: true,
      advice: expect.stringMatching(/client id must be the device id/),
    });
    expect(describeConnectFailure(withCode(4), context)).toMatchObject({
      kind: 'bad-credentials',
      refused: true,
    });
    expect(describeConnectFailure(withCode(3), context)).toMatchObject({
      kind: 'server-unavailable',
      refused: false,
    });
  });

  it('tells an untrusted gateway from a refused device certificate and from an unreachable one', () => {
    expect(describeConnectFailure(withCode('SELF_SIGNED_CERT_IN_CHAIN'), context)).toMatchObject({
      kind: 'untrusted-gateway',
      refused: true,
      advice: expect.stringMatching(/root CA pinned at enrollment/),
    });
    expect(describeConnectFailure(withCode('ERR_TLS_CERT_ALTNAME_INVALID'), context).kind).toBe(
      'untrusted-gateway',
    );
    expect(describeConnectFailure(withCode('ERR_SSL_TLSV1_ALERT_UNKNOWN_CA'), context)).toMatchObject({
      kind: 'certificate-refused',
      refused: true,
    });
    expect(describeConnectFailure(withCode('ECONNREFUSED'), context)).toMatchObject({
      kind: 'unreachable',
      refused: false,
    });
    expect(describeConnectFailure(withCode('ECONNRESET'), { ...context, wasOnline: true }).kind).toBe('lost');
    expect(describeConnectFailure(null, { ...context, wasOnline: true })).toMatchObject({
      kind: 'lost',
      message: 'the gateway closed the connection',
    });
    expect(describeConnectFailure(new Error('connack timeout'), context).kind).toBe('timeout');
  });

  it('reads the OpenSSL tunnel’s errors (a key in a TPM or a PKCS#11 token) the same way', () => {
    const untrusted = new AgentError('TLS_UNTRUSTED', '127.0.0.1:8883 is not trusted: hostname mismatch');
    expect(describeConnectFailure(untrusted, context)).toMatchObject({
      kind: 'untrusted-gateway',
      refused: true,
      message:
        'the gateway at mqtts://rampart.example:8883: 127.0.0.1:8883 is not trusted: hostname mismatch',
      advice: expect.stringMatching(/root CA pinned at enrollment/),
    });
    const refused = new AgentError('TLS_REFUSED', 'x ended the TLS connection with the alert "unknown ca"');
    expect(describeConnectFailure(refused, context)).toMatchObject({
      kind: 'certificate-refused',
      refused: true,
      advice: expect.stringMatching(/identity show/),
    });
    const unreachable = new AgentError('TLS_UNREACHABLE', 'cannot reach x (openssl: Connection refused)');
    expect(describeConnectFailure(unreachable, context)).toMatchObject({
      kind: 'unreachable',
      refused: false,
    });
    expect(describeConnectFailure(unreachable, { ...context, wasOnline: true }).kind).toBe('lost');
    // The anchor itself failing (OpenSSL cannot use the key) is the device's to fix.
    const anchor = new AgentError('TRUST_ANCHOR', 'OpenSSL could not use the identity key in the TPM');
    expect(describeConnectFailure(anchor, context)).toMatchObject({ kind: 'credentials', refused: true });
  });

  it('passes on the agent’s own credential errors as they are', () => {
    const err = new AgentError('CERT_EXPIRED', 'the device certificate expired; enroll again');
    expect(describeConnectFailure(err, context)).toEqual({
      kind: 'credentials',
      refused: true,
      message: 'the device certificate expired; enroll again',
      advice: null,
    });
  });
});

describe('topicMatches', () => {
  it.each([
    ['devices/dw-1/#', 'devices/dw-1/telemetry/temp', true],
    ['devices/dw-1/#', 'devices/dw-1', true],
    ['devices/+/telemetry', 'devices/dw-1/telemetry', true],
    ['devices/+/telemetry', 'devices/dw-1/telemetry/x', false],
    ['$rampart/devices/dw-1/commands/+/request', '$rampart/devices/dw-1/commands/abc/request', true],
    ['#', '$rampart/devices/dw-1/shadow/update/delta', false],
    ['+/devices/dw-1', '$rampart/devices/dw-1', false],
    ['a/b', 'a/b/c', false],
  ])('%s matches %s: %s', (filter, topic, expected) => {
    expect(topicMatches(filter, topic)).toBe(expected);
  });
});
