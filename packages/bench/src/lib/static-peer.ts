/**
 * The peer for the OTA benchmark: a bare static file server (node:http, plain HTTP like Rampart's
 * updates listener) that serves one image and nothing else — no metadata, no signatures, no
 * director, no receipts. Devices that only download the image and hash it against it are the floor
 * that any update system sits on; Rampart's figure divided by this one is the cost of everything
 * the secure flow adds.
 */
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

const image = readFileSync(process.argv[2]!);
const server = createServer((req, res) => {
  if (req.url !== '/image') {
    res.writeHead(404).end();
    return;
  }
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': image.length });
  res.end(image);
});
server.keepAliveTimeout = 10_000;
server.listen(0, '127.0.0.1', () => {
  const port = (server.address() as { port: number }).port;
  process.stdout.write(`listening peer http://127.0.0.1:${port}/image\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
