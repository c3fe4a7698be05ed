// Servers and a client for the mid-stream join test.
//   node join.js server H2_PORT H1_PORT   h2c and HTTP/1.1 servers; prints "listening"
//   node join.js client H2_PORT H1_PORT   opens one HTTP/2 and one keep-alive
//     HTTP/1.1 connection, makes a request on each, prints "connected", waits
//     for a line on stdin, then makes three more requests on each connection.
'use strict';
const http = require('http');
const http2 = require('http2');

const [mode, h2Port, h1Port] = process.argv.slice(2);

if (mode === 'server') {
  const h2 = http2.createServer();
  h2.on('stream', (stream, headers) => {
    stream.respond({ ':status': 200, 'content-type': 'text/plain' });
    stream.end(`h2 ${headers[':path']}`);
  });
  const h1 = http.createServer((req, res) => {
    res.setHeader('content-type', 'text/plain');
    res.end(`h1 ${req.url}`);
  });
  h1.keepAliveTimeout = 600000;
  h2.listen(Number(h2Port), '127.0.0.1', () => {
    h1.listen(Number(h1Port), '127.0.0.1', () => console.log('listening'));
  });
} else {
  const session = http2.connect(`http://127.0.0.1:${h2Port}`);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const read = (stream, ok) => {
    let body = '';
    stream.setEncoding('utf8');
    stream.on('data', (d) => { body += d; });
    stream.on('end', () => ok(body));
  };
  const h2get = (path) => new Promise((ok, fail) => {
    const req = session.request({ ':path': path });
    req.on('error', fail);
    read(req, ok);
    req.end();
  });
  const h1get = (path) => new Promise((ok, fail) => {
    http.get({ host: '127.0.0.1', port: Number(h1Port), path, agent }, (res) => read(res, ok))
      .on('error', fail);
  });
  (async () => {
    await h2get('/before');
    await h1get('/before');
    console.log('connected');
    await new Promise((ok) => process.stdin.once('data', ok));
    for (let i = 1; i <= 3; i++) {
      console.log(await h2get(`/after-h2-${i}`));
      console.log(await h1get(`/after-h1-${i}`));
    }
    session.close();
    agent.destroy();
    process.stdin.destroy();
  })().catch((e) => { console.error(e); process.exit(1); });
}
