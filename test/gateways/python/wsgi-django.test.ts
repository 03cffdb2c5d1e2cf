import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { FIXTURES, PYTHON, startGatehouse, tempDir } from '../../support/helpers.js'

const SITE = join(FIXTURES, 'wsgi', 'djsite')
const ADMIN_STATIC = '/usr/lib/python3/dist-packages/django/contrib/admin/static'

/** Cookies from Set-Cookie headers merged into a jar. */
function remember(jar: Map<string, string>, res: Response): void {
  for (const c of res.headers.getSetCookie()) {
    const [pair] = c.split(';')
    const eq = pair!.indexOf('=')
    jar.set(pair!.slice(0, eq), pair!.slice(eq + 1))
  }
}
const cookieHeader = (jar: Map<string, string>) => [...jar].map(([k, v]) => `${k}=${v}`).join('; ')

describe('Django 3.2 (python3-django)', () => {
  test('sqlite with migrations, the admin login with CSRF, static files served by Gatehouse', async (t) => {
    const dir = tempDir(t)
    const db = join(dir, 'db.sqlite3')
    const setup = spawnSync(
      PYTHON,
      [
        '-c',
        `import sys; sys.path.insert(0, ${JSON.stringify(SITE)}); import djsite
from django.core.management import call_command; call_command('migrate', verbosity=0)
from django.contrib.auth.models import User; User.objects.create_superuser('admin', 'a@example.com', 'pw-123-secret')`,
      ],
      { env: { DJANGO_DB: db, PATH: process.env.PATH ?? '/usr/bin' }, encoding: 'utf8', timeout: 60_000 },
    )
    assert.equal(setup.status, 0, setup.stderr)

    const { origin } = await startGatehouse(t, {
      routes: [
        { path: '/static/admin', static: { root: join(ADMIN_STATIC, 'admin') } },
        {
          path: '/',
          wsgi: {
            app: 'djsite:application',
            python: PYTHON,
            chdir: SITE,
            workers: 2,
            env: { DJANGO_DB: db },
          },
        },
      ],
    })

    const jar = new Map<string, string>()
    const form = await fetch(`${origin}/admin/login/?next=/admin/`)
    assert.equal(form.status, 200)
    remember(jar, form)
    const html = await form.text()
    const token = /name="csrfmiddlewaretoken" value="([^"]+)"/.exec(html)?.[1]
    assert.ok(token, 'the login form has a CSRF token')
    assert.ok(jar.has('csrftoken'))
    // The page links the admin's CSS, which the static route serves.
    const css = /href="(\/static\/admin\/css\/[^"]+\.css)"/.exec(html)?.[1]
    assert.ok(css)
    const sheet = await fetch(origin + css)
    assert.equal(sheet.status, 200)
    assert.match(sheet.headers.get('content-type') ?? '', /text\/css/)

    // Without the token: Django's CSRF check refuses.
    const refused = await fetch(`${origin}/admin/login/`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: cookieHeader(jar) },
      body: new URLSearchParams({ username: 'admin', password: 'pw-123-secret' }),
      redirect: 'manual',
    })
    assert.equal(refused.status, 403)
    await refused.text()

    const login = await fetch(`${origin}/admin/login/?next=/admin/`, {
      method: 'POST',
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        cookie: cookieHeader(jar),
        referer: `${origin}/admin/login/`,
      },
      body: new URLSearchParams({
        csrfmiddlewaretoken: token,
        username: 'admin',
        password: 'pw-123-secret',
        next: '/admin/',
      }),
      redirect: 'manual',
    })
    assert.equal(login.status, 302, await login.text())
    assert.equal(login.headers.get('location'), '/admin/')
    remember(jar, login)
    assert.ok(jar.has('sessionid'))

    const adminHome = await fetch(`${origin}/admin/`, { headers: { cookie: cookieHeader(jar) } })
    assert.equal(adminHome.status, 200)
    assert.match(await adminHome.text(), /Site administration/)
    const info = (await (
      await fetch(`${origin}/info/`, { headers: { cookie: cookieHeader(jar) } })
    ).json()) as Record<string, string>
    assert.deepEqual(info, { path: '/info/', script_name: '', user: 'admin' })
  })
})
