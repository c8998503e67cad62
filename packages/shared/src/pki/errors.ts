/** Raised when a PKI object (CSR, certificate, PKCS#7, base64 body) cannot be read; the message says what was wrong. */
export class PkiFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PkiFormatError';
  }
}
