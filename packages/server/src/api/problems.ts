import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { SharedError } from '@rampart/shared/errors';
import { PROBLEM_CONTENT_TYPE, problemType, type Problem } from '@rampart/shared/problem';
import { describeError, errorPath } from '@rampart/shared/schema';
import { RampartError, type RampartErrorCode } from '../errors.js';

const TITLES: Record<RampartErrorCode, string> = {
  VALIDATION: 'Invalid request',
  QUERY_INVALID: 'Invalid fleet query',
  IMPORT_INVALID: 'Import rejected',
  UNAUTHORIZED: 'Authentication required',
  FORBIDDEN: 'Forbidden',
  NOT_FOUND: 'Not found',
  CONFLICT: 'Conflict',
  PAYLOAD_TOO_LARGE: 'Request body too large',
  UNSUPPORTED_MEDIA_TYPE: 'Unsupported media type',
  RATE_LIMITED: 'Too many requests',
  KEYSTORE: 'Key store failure',
  STORAGE: 'Storage failure',
  INTERNAL: 'Internal error',
};

export function problemOf(err: RampartError, instance?: string): Problem {
  return {
    type: problemType(err.code),
    title: TITLES[err.code],
    status: err.status,
    detail: err.message,
    code: err.code,
    ...(instance ? { instance } : {}),
    ...(err.errors.length ? { errors: [...err.errors] } : {}),
  };
}

export function sendProblem(reply: FastifyReply, err: RampartError): FastifyReply {
  return reply
    .code(err.status)
    .type(PROBLEM_CONTENT_TYPE)
    .send(problemOf(err, reply.request.url.split('?')[0]));
}

const PART_PREFIX: Record<string, string> = {
  body: '',
  querystring: 'query.',
  params: 'params.',
  headers: 'headers.',
};

function validationError(err: FastifyError): RampartError {
  const part = err.validationContext ?? 'body';
  const prefix = PART_PREFIX[part] ?? `${part}.`;
  const errors = (err.validation as unknown as Parameters<typeof errorPath>[0][]).map((e) => {
    const path = errorPath(e);
    return { field: path ? prefix + path : part === 'body' ? '(body)' : part, message: describeError(e) };
  });
  const first = errors[0];
  return new RampartError(
    'VALIDATION',
    first ? `${first.field} ${first.message}` : `the request ${part} is invalid`,
    errors,
  );
}

/** Map anything thrown in a request to an RFC 9457 problem. Internal details never leave the server. */
export function toRampartError(err: unknown): RampartError {
  if (err instanceof RampartError) return err;
  if (err instanceof SharedError) {
    const code: RampartErrorCode = err.code === 'QUERY_SYNTAX' ? 'QUERY_INVALID' : 'VALIDATION';
    return new RampartError(
      code,
      err.message,
      err.code === 'QUERY_SYNTAX' ? [{ field: 'query', message: err.message }] : [],
    );
  }
  const fe = err as FastifyError;
  if (fe.validation) return validationError(fe);
  switch (fe.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new RampartError('PAYLOAD_TOO_LARGE', 'the request body is larger than this endpoint accepts');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new RampartError(
        'UNSUPPORTED_MEDIA_TYPE',
        `this endpoint does not accept content type ${JSON.stringify(fe.message.split(': ').pop())}`,
      );
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new RampartError('VALIDATION', 'the request body is empty; send a JSON object', [
        { field: '(body)', message: 'is empty' },
      ]);
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new RampartError('VALIDATION', 'the Content-Length header does not match the body');
  }
  if (fe.statusCode === 400 && (err instanceof SyntaxError || fe.code === 'FST_ERR_CTP_INVALID_JSON_BODY')) {
    return new RampartError('VALIDATION', `the request body is not valid JSON: ${fe.message}`, [
      { field: '(body)', message: 'is not valid JSON' },
    ]);
  }
  if (fe.statusCode === 429) return new RampartError('RATE_LIMITED', fe.message);
  if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
    return new RampartError('VALIDATION', fe.message);
  }
  return new RampartError('INTERNAL', 'an internal error occurred; the server log has the details');
}

export function errorHandler(err: unknown, request: FastifyRequest, reply: FastifyReply) {
  const rerr = toRampartError(err);
  if (rerr.code === 'INTERNAL' || rerr.code === 'STORAGE' || rerr.code === 'KEYSTORE') {
    request.log.error({ err }, 'request failed');
  } else {
    request.log.debug({ code: rerr.code, msg: rerr.message }, 'request refused');
  }
  return sendProblem(reply, rerr);
}
