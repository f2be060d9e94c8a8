// A tiny static file server for the demo page (tests/sdk/web) and the SDK's
// browser build it loads from tests/sdk/node_modules. Loopback only.
//
//   node tests/sdk/serve.mjs [--port 8081]     (0 picks a free port)
//
// Prints one line, `serving http://127.0.0.1:PORT/web/`, once it listens. Only
// GET/HEAD of files under web/ and node_modules/ are served.

import { createServer } from 'node:http';
import { readFile, stat } from 'node:fs/promises';
import { extname, join, normalize, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('.', import.meta.url));
const portArg = process.argv.indexOf('--port');
const port = portArg > 0 ? Number(process.argv[portArg + 1]) : 8081;

const types = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.map': 'application/json',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
};

const server = createServer(async (req, res) => {
  const send = (status, body, headers = {}) => {
    res.writeHead(status, { 'cache-control': 'no-store', ...headers });
    res.end(req.method === 'HEAD' ? undefined : body);
  };
  if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'method not allowed\n');
  let path;
  try {
    path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
  } catch {
    return send(400, 'bad path\n');
  }
  if (path === '/' || path === '/web') return send(302, '', { location: '/web/' });
  if (path.endsWith('/')) path += 'index.html';
  const rel = normalize(path).replace(/^[/\\]+/, '');
  const allowed = rel.startsWith(`web${sep}`) || rel.startsWith(`node_modules${sep}`);
  if (!allowed || rel.split(sep).includes('..')) return send(404, 'not found\n');
  const file = join(root, rel);
  try {
    if (!(await stat(file)).isFile()) return send(404, 'not found\n');
    const body = await readFile(file);
    send(200, body, { 'content-type': types[extname(file)] ?? 'application/octet-stream' });
  } catch {
    send(404, 'not found\n');
  }
});

server.listen(port, '127.0.0.1', () => {
  console.log(`serving http://127.0.0.1:${server.address().port}/web/`);
});
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => server.close(() => process.exit(0)));
