#!/usr/bin/env bash
# slapd.sh - start/stop a throw-away OpenLDAP slapd (cn=config, mdb,
# ppolicy + memberof overlays) in a temp directory, bound to loopback only.
# Adapted from ../shared/testbeds/slapd-throwaway.sh for hybridsync's directory tests:
#  - the database ACL starts with the rules hybridsync's service accounts need (README, "Connect a
#    directory"), unless SLAPD_NO_AGENT_ACL=1 (to test "missing rights");
#  - cn=noread,ou=services,<suffix> (password SLAPD_CONSOLE_PW) may bind but read nothing.
# Never touches the system instance (/etc/ldap/slapd.d, /var/lib/ldap).
#
# Needs: Debian packages slapd + ldap-utils (+ openssl for LDAPS).
#   echo "slapd slapd/no_configuration boolean true" | debconf-set-selections
#   DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends slapd ldap-utils
#
# Usage:
#   slapd-throwaway.sh start PORT [LDAPS_PORT]   -> prints the instance dir (last stdout line);
#                                                   "$DIR/env" holds shell exports for tests
#   slapd-throwaway.sh stop DIR                  -> kills the slapd by its PID, removes DIR
#                                                   (KEEP=1 keeps DIR, e.g. to read slapd.log)
#   slapd-throwaway.sh selftest PORT [LDAPS_PORT] -> start, exercise search/bind/passwd/lockout, stop
#
# PORT may be 0 to pick a free port.  Env knobs (all optional):
#   SLAPD_DIR=/path        use this dir (must not exist or be empty) instead of mktemp -d
#   SLAPD_SUFFIX=dc=example,dc=test
#   SLAPD_ADMIN_PW=admin   rootdn (cn=admin,<suffix>) password
#   SLAPD_CONSOLE_PW=console  password of cn=console,ou=services,<suffix> (non-root admin account)
#   SLAPD_USER_PW=password    password of seeded users alice/bob/carol
#   SLAPD_NO_SEED=1        only create base entry + ou=policies default policy
#   SLAPD_EXTRA_LDIF=file  extra LDIF added (as rootdn) after seeding
#   SLAPD_DEBUG=0          slapd -d level (e.g. stats, or 256); output goes to $DIR/slapd.log
#   SLAPD_MAX_FAILURE=3    ppolicy pwdMaxFailure (lockout after N bad binds)
#   SLAPD_MIN_LENGTH=0     ppolicy pwdMinLength; above 0 also turns quality checking on (pwdCheckQuality 2)
#   SLAPD_NO_SYNCPROV=1    no syncprov overlay (RFC 4533 content sync; hybridsync's agents then find
#                          deletions by listing anchors, as against a directory without it)
#   SLAPD_SESSIONLOG=10000 syncprov session log size (deletions remembered for cookie-based deltas)
#   SLAPD_BULK_LDIF=file   loaded offline with `slapadd -q` before slapd starts (benchmarks: it must
#                          hold the suffix entry itself); the online seed is then skipped
set -euo pipefail

SLAPD_BIN=${SLAPD_BIN:-/usr/sbin/slapd}
SCHEMA_DIR=${SCHEMA_DIR:-/etc/ldap/schema}
MODULE_DIR=${MODULE_DIR:-/usr/lib/ldap}

die() { echo "slapd-throwaway: $*" >&2; exit 1; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

urlenc_path() { # for ldapi:// URLs
  local p=$1; p=${p//%/%25}; p=${p//\//%2F}; p=${p//,/%2C}; printf '%s' "$p"
}

make_tls() { # $1 = dir; throwaway CA + server cert (SAN localhost/127.0.0.1/::1). A CA-signed leaf,
  # not a self-signed one, so rustls/webpki clients accept it with the CA as the only trust anchor.
  local t=$1
  mkdir -p "$t"
  openssl req -x509 -new -nodes -newkey rsa:2048 -days 3 -subj "/CN=throwaway test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$t/ca.key" -out "$t/ca.pem" >/dev/null 2>&1 &&
  openssl req -new -nodes -newkey rsa:2048 -subj "/CN=localhost" \
    -keyout "$t/key.pem" -out "$t/req.csr" >/dev/null 2>&1 &&
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' >"$t/ext.cnf" &&
  openssl x509 -req -in "$t/req.csr" -CA "$t/ca.pem" -CAkey "$t/ca.key" -CAcreateserial \
    -days 2 -extfile "$t/ext.cnf" -out "$t/cert.pem" >/dev/null 2>&1 &&
  chmod 600 "$t/key.pem" "$t/ca.key"
}

cmd_start() {
  local port=${1:-} ldaps_port=${2:-}
  [ -n "$port" ] || die "usage: $0 start PORT [LDAPS_PORT]"
  [ -x "$SLAPD_BIN" ] || die "slapd not installed ($SLAPD_BIN)"
  [ "$port" = 0 ] && port=$(free_port)
  [ "$ldaps_port" = 0 ] && ldaps_port=$(free_port)

  local suffix=${SLAPD_SUFFIX:-dc=example,dc=test}
  local admin_pw=${SLAPD_ADMIN_PW:-admin}
  local console_pw=${SLAPD_CONSOLE_PW:-console}
  local user_pw=${SLAPD_USER_PW:-password}
  local max_failure=${SLAPD_MAX_FAILURE:-3}
  local min_length=${SLAPD_MIN_LENGTH:-0} check_quality=0
  [ "$min_length" -gt 0 ] && check_quality=2
  local dc1=${suffix%%,*}; dc1=${dc1#*=}

  local dir
  if [ -n "${SLAPD_DIR:-}" ]; then dir=$SLAPD_DIR; mkdir -p "$dir"; else dir=$(mktemp -d /tmp/slapd.XXXXXX); fi
  dir=$(cd "$dir" && pwd)
  mkdir -p "$dir/slapd.d" "$dir/data"
  local ldapi_uri="ldapi://$(urlenc_path "$dir/ldapi")"
  local ldap_uri="ldap://127.0.0.1:$port/"
  local urls="$ldap_uri $ldapi_uri"

  local tls_ldif=""
  if [ -n "$ldaps_port" ]; then
    make_tls "$dir/tls" || die "openssl failed"
    tls_ldif="olcTLSCertificateFile: $dir/tls/cert.pem
olcTLSCertificateKeyFile: $dir/tls/key.pem"
    urls="$urls ldaps://127.0.0.1:$ldaps_port/"
  fi

  local admin_hash console_hash
  admin_hash=$(slappasswd -s "$admin_pw")
  # The rules of hybridsync's README for the agents' group (provAgentSvcGroup), first in order.
  local agent_acl="" acl_base=0
  local syncprov_ldif=""
  if [ -z "${SLAPD_NO_SYNCPROV:-}" ]; then
    syncprov_ldif="
dn: olcOverlay={2}syncprov,olcDatabase={1}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcSyncProvConfig
olcOverlay: {2}syncprov
olcSpCheckpoint: 100 1
olcSpSessionlog: ${SLAPD_SESSIONLOG:-10000}
"
  fi
  if [ -z "${SLAPD_NO_AGENT_ACL:-}" ]; then
    agent_acl="olcAccess: {0}to attrs=userPassword,pwdAccountLockedTime,pwdReset by group.exact=\"cn=provAgentSvcGroup,$suffix\" write by * break
olcAccess: {1}to * by group.exact=\"cn=provAgentSvcGroup,$suffix\" read by * break
olcLimits: group/groupOfNames/member=\"cn=provAgentSvcGroup,$suffix\" size=unlimited time=unlimited
"
    acl_base=2
  fi

  cat >"$dir/config.ldif" <<EOF
dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: $dir/slapd.pid
olcArgsFile: $dir/slapd.args
olcLogLevel: stats
${tls_ldif}

dn: cn=module{0},cn=config
objectClass: olcModuleList
cn: module{0}
olcModulePath: $MODULE_DIR
olcModuleLoad: back_mdb
olcModuleLoad: memberof
olcModuleLoad: ppolicy
olcModuleLoad: syncprov

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

include: file://$SCHEMA_DIR/core.ldif
include: file://$SCHEMA_DIR/cosine.ldif
include: file://$SCHEMA_DIR/nis.ldif
include: file://$SCHEMA_DIR/inetorgperson.ldif

dn: olcDatabase={-1}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {-1}frontend
olcPasswordHash: {SSHA}
olcSizeLimit: 5000

dn: olcDatabase={0}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {0}config
olcRootDN: cn=admin,cn=config
olcRootPW: $admin_hash
olcAccess: {0}to * by dn.exact=gidNumber=$(id -g)+uidNumber=$(id -u),cn=peercred,cn=external,cn=auth manage by * break

dn: olcDatabase={1}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {1}mdb
olcDbDirectory: $dir/data
olcDbMaxSize: 268435456
olcSuffix: $suffix
olcRootDN: cn=admin,$suffix
olcRootPW: $admin_hash
olcDbIndex: objectClass eq
olcDbIndex: uid,cn,mail,member,memberOf eq
olcDbIndex: entryUUID eq
olcDbIndex: modifyTimestamp eq
olcDbIndex: entryCSN eq
olcLastMod: TRUE
${agent_acl}olcAccess: {$((acl_base))}to attrs=userPassword by self write by dn.exact="cn=console,ou=services,$suffix" write by anonymous auth by * none
olcAccess: {$((acl_base+1))}to * by dn.exact="cn=console,ou=services,$suffix" write by dn.exact="cn=noread,ou=services,$suffix" none by self read by users read by * none

dn: olcOverlay={0}memberof,olcDatabase={1}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcMemberOf
olcOverlay: {0}memberof
olcMemberOfRefInt: TRUE
olcMemberOfDangling: ignore
olcMemberOfGroupOC: groupOfNames
olcMemberOfMemberAD: member
olcMemberOfMemberOfAD: memberOf

dn: olcOverlay={1}ppolicy,olcDatabase={1}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcPPolicyConfig
olcOverlay: {1}ppolicy
olcPPolicyDefault: cn=default,ou=policies,$suffix
olcPPolicyHashCleartext: TRUE
olcPPolicyUseLockout: TRUE
${syncprov_ldif}
EOF

  slapadd -n0 -F "$dir/slapd.d" -l "$dir/config.ldif" >"$dir/slapadd.log" 2>&1 \
    || { cat "$dir/slapadd.log" >&2; die "slapadd of cn=config failed"; }
  if [ -n "${SLAPD_BULK_LDIF:-}" ]; then
    slapadd -q -n1 -F "$dir/slapd.d" -l "$SLAPD_BULK_LDIF" >>"$dir/slapadd.log" 2>&1 \
      || { cat "$dir/slapadd.log" >&2; die "slapadd of $SLAPD_BULK_LDIF failed"; }
  fi

  # Foreground (-d) so that the PID we get is slapd's own and logs land in a file.
  # setsid: own session, so a Ctrl-C / SIGHUP to the caller's group does not hit it.
  setsid "$SLAPD_BIN" -d "${SLAPD_DEBUG:-0}" -F "$dir/slapd.d" -h "$urls" \
    </dev/null >"$dir/slapd.log" 2>&1 &
  local pid=$!
  echo "$pid" >"$dir/pid"

  local i
  for i in $(seq 1 100); do
    if ldapsearch -x -H "$ldap_uri" -b "" -s base -LLL namingContexts >/dev/null 2>&1; then break; fi
    kill -0 "$pid" 2>/dev/null || { cat "$dir/slapd.log" >&2; die "slapd exited during startup"; }
    sleep 0.1
  done
  ldapsearch -x -H "$ldap_uri" -b "" -s base namingContexts >/dev/null 2>&1 \
    || { kill "$pid" 2>/dev/null; cat "$dir/slapd.log" >&2; die "slapd did not answer on $ldap_uri"; }

  # Seed data (online, as rootdn, so overlays run: ppolicy hashes the cleartext
  # userPassword values, memberof maintains memberOf).
  {
    cat <<EOF
dn: $suffix
objectClass: top
objectClass: dcObject
objectClass: organization
o: $dc1 test
dc: $dc1

dn: ou=policies,$suffix
objectClass: organizationalUnit
ou: policies

dn: cn=default,ou=policies,$suffix
objectClass: top
objectClass: device
objectClass: pwdPolicy
cn: default
pwdAttribute: userPassword
pwdMaxFailure: $max_failure
pwdLockout: TRUE
pwdLockoutDuration: 0
pwdFailureCountInterval: 0
pwdAllowUserChange: TRUE
pwdMustChange: FALSE
pwdSafeModify: FALSE
pwdCheckQuality: $check_quality
pwdMinLength: $min_length
pwdInHistory: 0

EOF
    if [ -z "${SLAPD_NO_SEED:-}" ]; then
      cat <<EOF
dn: ou=people,$suffix
objectClass: organizationalUnit
ou: people

dn: ou=groups,$suffix
objectClass: organizationalUnit
ou: groups

dn: ou=services,$suffix
objectClass: organizationalUnit
ou: services

dn: cn=console,ou=services,$suffix
objectClass: top
objectClass: applicationProcess
objectClass: simpleSecurityObject
cn: console
description: admin-console service account (write access to the tree)
userPassword: $console_pw

dn: cn=noread,ou=services,$suffix
objectClass: top
objectClass: applicationProcess
objectClass: simpleSecurityObject
cn: noread
description: may bind, may read nothing (tests of missing rights)
userPassword: $console_pw

EOF
      local n=1000 u given sn
      for u in alice:Alice:Anderson bob:Bob:Brown carol:Carol:Clark; do
        IFS=: read -r uid given sn <<<"$u"; n=$((n+1))
        cat <<EOF
dn: uid=$uid,ou=people,$suffix
objectClass: top
objectClass: inetOrgPerson
objectClass: posixAccount
uid: $uid
cn: $given $sn
givenName: $given
sn: $sn
displayName: $given $sn
mail: $uid@example.test
uidNumber: $n
gidNumber: $n
homeDirectory: /home/$uid
loginShell: /bin/bash
userPassword: $user_pw

EOF
      done
      cat <<EOF
dn: cn=admins,ou=groups,$suffix
objectClass: groupOfNames
cn: admins
description: console administrators
member: uid=alice,ou=people,$suffix

dn: cn=developers,ou=groups,$suffix
objectClass: groupOfNames
cn: developers
member: uid=alice,ou=people,$suffix
member: uid=bob,ou=people,$suffix

EOF
    fi
  } >"$dir/seed.ldif"

  if [ -z "${SLAPD_BULK_LDIF:-}" ]; then
  ldapadd -x -H "$ldap_uri" -D "cn=admin,$suffix" -w "$admin_pw" -f "$dir/seed.ldif" >"$dir/seed.log" 2>&1 \
    || { kill "$pid" 2>/dev/null; cat "$dir/seed.log" >&2; die "seeding failed"; }
  fi
  if [ -n "${SLAPD_EXTRA_LDIF:-}" ]; then
    ldapadd -x -H "$ldap_uri" -D "cn=admin,$suffix" -w "$admin_pw" -f "$SLAPD_EXTRA_LDIF" >>"$dir/seed.log" 2>&1 \
      || { kill "$pid" 2>/dev/null; cat "$dir/seed.log" >&2; die "extra LDIF failed"; }
  fi

  cat >"$dir/env" <<EOF
export SLAPD_DIR='$dir'
export SLAPD_PID=$pid
export LDAP_PORT=$port
export LDAP_URI='$ldap_uri'
export LDAPI_URI='$ldapi_uri'
export LDAP_BASE_DN='$suffix'
export LDAP_ADMIN_DN='cn=admin,$suffix'
export LDAP_ADMIN_PASSWORD='$admin_pw'
export LDAP_CONFIG_DN='cn=admin,cn=config'
export LDAP_CONSOLE_DN='cn=console,ou=services,$suffix'
export LDAP_CONSOLE_PASSWORD='$console_pw'
export LDAP_USER_PASSWORD='$user_pw'
EOF
  if [ -n "$ldaps_port" ]; then
    cat >>"$dir/env" <<EOF
export LDAPS_PORT=$ldaps_port
export LDAPS_URI='ldaps://127.0.0.1:$ldaps_port/'
export LDAP_CA_CERT='$dir/tls/ca.pem'
EOF
  fi
  echo "slapd pid $pid listening on $urls" >&2
  echo "$dir"
}

cmd_stop() {
  local dir=${1:-}
  [ -n "$dir" ] && [ -f "$dir/pid" ] || die "usage: $0 stop DIR (no $dir/pid)"
  local pid; pid=$(cat "$dir/pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    local i
    for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then echo "slapd $pid did not stop, sending KILL" >&2; kill -KILL "$pid"; fi
  fi
  if [ -z "${KEEP:-}" ]; then rm -rf "$dir"; fi
  echo "stopped slapd $pid" >&2
}

expect_fail() { if "$@"; then die "expected failure: $*"; fi; }

cmd_selftest() {
  local dir; dir=$(cmd_start "$@")
  # shellcheck disable=SC1091
  . "$dir/env"
  trap 'cmd_stop "$SLAPD_DIR"' EXIT
  local B=$LDAP_BASE_DN H=$LDAP_URI A=uid=alice,ou=people,$LDAP_BASE_DN C=uid=carol,ou=people,$LDAP_BASE_DN
  set -x
  ldapsearch -x -H "$H" -b "" -s base -LLL namingContexts supportedExtension supportedControl
  ldapsearch -x -H "$H" -D "$LDAP_ADMIN_DN" -w "$LDAP_ADMIN_PASSWORD" -b "$B" -LLL "(objectClass=inetOrgPerson)" uid cn mail memberOf userPassword
  ldapsearch -x -H "$H" -D "$LDAP_ADMIN_DN" -w "$LDAP_ADMIN_PASSWORD" -b "ou=groups,$B" -LLL member
  ldapwhoami -x -H "$H" -D "$A" -w "$LDAP_USER_PASSWORD"
  # self-service password change via Password Modify extended op (RFC 3062)
  ldappasswd -x -H "$H" -D "$A" -w "$LDAP_USER_PASSWORD" -a "$LDAP_USER_PASSWORD" -s 'N3w-pass!' "$A"
  ldapwhoami -x -H "$H" -D "$A" -w 'N3w-pass!'
  expect_fail ldapwhoami -x -H "$H" -D "$A" -w "$LDAP_USER_PASSWORD"
  # admin reset via extop by the non-root console account, server-generated password
  ldappasswd -x -H "$H" -D "$LDAP_CONSOLE_DN" -w "$LDAP_CONSOLE_PASSWORD" "$A"
  # lockout: 3 bad binds -> pwdAccountLockedTime, then even the right password fails
  for i in 1 2 3; do expect_fail ldapwhoami -x -H "$H" -D "$C" -w wrong; done
  ldapsearch -x -H "$H" -D "$LDAP_ADMIN_DN" -w "$LDAP_ADMIN_PASSWORD" -b "$C" -s base -LLL pwdAccountLockedTime pwdFailureTime
  expect_fail ldapwhoami -x -H "$H" -D "$C" -w "$LDAP_USER_PASSWORD" -e ppolicy
  # unlock by the console account (plain ldapmodify delete of the operational attr)
  printf 'dn: %s\nchangetype: modify\ndelete: pwdAccountLockedTime\n' "$C" \
    | ldapmodify -x -H "$H" -D "$LDAP_CONSOLE_DN" -w "$LDAP_CONSOLE_PASSWORD"
  ldapwhoami -x -H "$H" -D "$C" -w "$LDAP_USER_PASSWORD" -e ppolicy
  # admin lock (permanent) by setting pwdAccountLockedTime=000001010000Z
  printf 'dn: %s\nchangetype: modify\nreplace: pwdAccountLockedTime\npwdAccountLockedTime: 000001010000Z\n' "$C" \
    | ldapmodify -x -H "$H" -D "$LDAP_CONSOLE_DN" -w "$LDAP_CONSOLE_PASSWORD"
  expect_fail ldapwhoami -x -H "$H" -D "$C" -w "$LDAP_USER_PASSWORD"
  # cn=config over ldapi with SASL EXTERNAL (root only) - e.g. to tweak the policy at runtime
  ldapsearch -Y EXTERNAL -H "$LDAPI_URI" -b cn=config -LLL "(olcOverlay=*)" dn 2>/dev/null
  if [ -n "${LDAPS_URI:-}" ]; then
    LDAPTLS_CACERT=$LDAP_CA_CERT ldapwhoami -x -H "$LDAPS_URI" -D "$LDAP_ADMIN_DN" -w "$LDAP_ADMIN_PASSWORD"
    LDAPTLS_CACERT=$LDAP_CA_CERT ldapwhoami -x -ZZ -H "$H" -D "$LDAP_ADMIN_DN" -w "$LDAP_ADMIN_PASSWORD"
  fi
  set +x
  echo "SELFTEST OK"
}

case "${1:-}" in
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  selftest) shift; cmd_selftest "$@" ;;
  *) die "usage: $0 {start PORT [LDAPS_PORT] | stop DIR | selftest PORT [LDAPS_PORT]}" ;;
esac
