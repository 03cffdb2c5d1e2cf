<?php
// Served by Gatehouse's own php-cgi pool (see examples/gatehouse.toml and docs/process-manager.md).
header('Content-Type: text/plain; charset=utf-8');
echo "Hello from PHP ", PHP_VERSION, " (worker pid ", getmypid(), ")\n";
echo "REQUEST_URI: ", $_SERVER['REQUEST_URI'], "\n";
echo "PATH_INFO: ", $_SERVER['PATH_INFO'] ?? '', "\n";
