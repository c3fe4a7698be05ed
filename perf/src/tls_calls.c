/*
 * tls_calls CERT KEY N: one thread, one TLS connection over loopback TCP to
 * itself (OpenSSL, the system libssl). N times: the client SSL_write()s 64
 * bytes, the server SSL_read()s them. Prints the CPU nanoseconds per message
 * (two TLS calls) of the timed loop on stdout: CPU time of the thread, user
 * and kernel (where uprobes run), so a busy machine's preemption is left out.
 *
 * Built and run by the bench (perf/src/tls_calls.rs) to measure what a TLS
 * call costs under tapwire: untraced, in a process tapwire selects, and in one
 * it does not.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
  fprintf(stderr, "tls_calls: %s\n", what);
  ERR_print_errors_fp(stderr);
  exit(1);
}

/* A connected pair of loopback TCP sockets: fds[0] the client's, fds[1] the
 * server's (accepted). */
static void tcp_pair(int fds[2]) {
  int l = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 1) ||
      getsockname(l, (struct sockaddr *)&a, &len))
    die("listen");
  fds[0] = socket(AF_INET, SOCK_STREAM, 0);
  /* The listen backlog completes the connection before accept(). */
  if (fds[0] < 0 || connect(fds[0], (struct sockaddr *)&a, sizeof a))
    die("connect");
  fds[1] = accept(l, NULL, NULL);
  if (fds[1] < 0)
    die("accept");
  close(l);
  int one = 1;
  for (int i = 0; i < 2; i++) {
    setsockopt(fds[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
  }
}

/* Drives both handshakes in turn until both are done (non-blocking). */
static void handshake(SSL *c, SSL *s) {
  int cd = 0, sd = 0;
  for (int i = 0; i < 10000 && !(cd && sd); i++) {
    if (!cd) {
      int r = SSL_do_handshake(c);
      if (r == 1)
        cd = 1;
      else if (SSL_get_error(c, r) != SSL_ERROR_WANT_READ)
        die("client handshake");
    }
    if (!sd) {
      int r = SSL_do_handshake(s);
      if (r == 1)
        sd = 1;
      else if (SSL_get_error(s, r) != SSL_ERROR_WANT_READ)
        die("server handshake");
    }
  }
  if (!(cd && sd))
    die("handshake did not finish");
}

/* Reads exactly n bytes from s (the bytes are in flight on loopback). */
static void read_all(SSL *s, char *buf, int n) {
  int got = 0;
  while (got < n) {
    int r = SSL_read(s, buf + got, n - got);
    if (r > 0)
      got += r;
    else if (SSL_get_error(s, r) != SSL_ERROR_WANT_READ)
      die("SSL_read");
  }
}

int main(int argc, char **argv) {
  if (argc != 4)
    die("usage: tls_calls CERT KEY N");
  long n = atol(argv[3]);
  SSL_CTX *sctx = SSL_CTX_new(TLS_server_method());
  SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
  if (!sctx || !cctx ||
      SSL_CTX_use_certificate_chain_file(sctx, argv[1]) != 1 ||
      SSL_CTX_use_PrivateKey_file(sctx, argv[2], SSL_FILETYPE_PEM) != 1)
    die("certificate");
  int fds[2];
  tcp_pair(fds);
  SSL *c = SSL_new(cctx), *s = SSL_new(sctx);
  SSL_set_fd(c, fds[0]);
  SSL_set_fd(s, fds[1]);
  SSL_set_connect_state(c);
  SSL_set_accept_state(s);
  handshake(c, s);
  char msg[64], buf[64];
  memset(msg, 'x', sizeof msg);
  /* Warm-up: TLS 1.3 session tickets arrive with the first read. */
  for (int i = 0; i < 100; i++) {
    if (SSL_write(c, msg, sizeof msg) != sizeof msg)
      die("SSL_write");
    read_all(s, buf, sizeof buf);
  }
  struct timespec t0, t1;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
  for (long i = 0; i < n; i++) {
    if (SSL_write(c, msg, sizeof msg) != sizeof msg)
      die("SSL_write");
    read_all(s, buf, sizeof buf);
  }
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
  double ns = (t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec);
  printf("%.1f\n", ns / (double)n);
  return 0;
}
