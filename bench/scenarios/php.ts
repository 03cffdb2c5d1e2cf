/*
 * PHP behind a front: Gatehouse's php action against nginx's fastcgi_pass, both in front of
 * the same php-fpm pool (started once per scenario, shared, its memory counted on neither
 * side). Each front is configured as it is usually deployed: Gatehouse keeps its FastCGI
 * connections alive (its default; max_connections equal to the pool's workers, as
 * docs/fastcgi.md advises), nginx opens one per request (its default; keepalive to php-fpm
 * needs an upstream block and fastcgi_keep_conn, and misbehaves past the worker count).
 * nginx resolves scripts the way the php action does: split_path_info, try_files, and
 * index.php as the front controller.
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { nginxPeer } from '../peers/nginx.js'
import { phpFpmBackend, phpFpmSocket } from '../peers/php-fpm.js'
import type { Scenario } from '../scenario.js'

/** php-fpm workers; Gatehouse's pool opens as many connections. */
const WORKERS = 4

export const docroot = (tmpDir: string) => join(tmpDir, 'docroot')

export function prepare(tmpDir: string): void {
  mkdirSync(docroot(tmpDir), { mode: 0o755 })
  const files: Record<string, string> = {
    'index.php': '<?php echo "front controller\\n";\n',
    'hello.php': '<?php echo "hello\\n";\n',
    // 100 KB of text, built per request as a page template would be.
    '100k.php': '<?php echo str_repeat(str_repeat("x", 63) . "\\n", 1600);\n',
  }
  for (const [name, body] of Object.entries(files))
    writeFileSync(join(docroot(tmpDir), name), body, { mode: 0o644 })
}

const gatehouse = (tmpDir: string) => ({
  config: {
    routes: [
      {
        path: '/',
        php: { root: docroot(tmpDir), fastcgi: `unix:${phpFpmSocket(tmpDir)}`, max_connections: WORKERS },
      },
    ],
  },
})

/** The usual nginx PHP site: conf/fastcgi_params inlined, plus the split and the front controller. */
export const nginx = nginxPeer({
  server: (tmpDir) => `    root ${docroot(tmpDir)};
    index index.php;
    location / { try_files $uri $uri/ /index.php?$query_string; }
    location ~ \\.php(/|$) {
      fastcgi_split_path_info ^(.+?\\.php)(/.*)$;
      try_files $fastcgi_script_name =404;
      fastcgi_pass unix:${phpFpmSocket(tmpDir)};
      fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
      fastcgi_param PATH_INFO $fastcgi_path_info;
      fastcgi_param QUERY_STRING $query_string;
      fastcgi_param REQUEST_METHOD $request_method;
      fastcgi_param CONTENT_TYPE $content_type;
      fastcgi_param CONTENT_LENGTH $content_length;
      fastcgi_param SCRIPT_NAME $fastcgi_script_name;
      fastcgi_param REQUEST_URI $request_uri;
      fastcgi_param DOCUMENT_URI $document_uri;
      fastcgi_param DOCUMENT_ROOT $document_root;
      fastcgi_param SERVER_PROTOCOL $server_protocol;
      fastcgi_param REQUEST_SCHEME $scheme;
      fastcgi_param HTTPS $https if_not_empty;
      fastcgi_param GATEWAY_INTERFACE CGI/1.1;
      fastcgi_param SERVER_SOFTWARE nginx/$nginx_version;
      fastcgi_param REMOTE_ADDR $remote_addr;
      fastcgi_param REMOTE_PORT $remote_port;
      fastcgi_param SERVER_ADDR $server_addr;
      fastcgi_param SERVER_PORT $server_port;
      fastcgi_param SERVER_NAME $server_name;
      fastcgi_param REDIRECT_STATUS 200;
    }`,
})

const backend = phpFpmBackend({ maxChildren: WORKERS })

export const phpScenarios: Scenario[] = [
  {
    name: 'php-hello',
    description: `GET /hello.php: a 6-byte PHP page through php-fpm (${WORKERS} workers, shared): Gatehouse php action vs nginx fastcgi_pass`,
    path: '/hello.php',
    prepare,
    gatehouse,
    peer: nginx,
    backend,
  },
  {
    name: 'php-100k',
    description: `GET /100k.php: a 100 KB PHP page through php-fpm (${WORKERS} workers, shared): Gatehouse php action vs nginx fastcgi_pass`,
    path: '/100k.php',
    prepare,
    gatehouse,
    peer: nginx,
    backend,
  },
]
