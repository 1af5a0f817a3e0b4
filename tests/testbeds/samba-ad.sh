#!/usr/bin/env bash
# samba-ad.sh - provision and run a throw-away Samba AD DC in a temp dir,
# bound to loopback only (interfaces=lo, bind interfaces only=yes).
# Copied from ../shared/testbeds/samba-ad-throwaway.sh for hybridsync's directory tests.
# Does not touch /etc/samba or /var/lib/samba (everything lives under the temp dir).
#
# Needs (Debian 12): run as root (ports 389/636/3268/3269 are fixed in Samba, no option)
#   DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
#     samba samba-ad-dc samba-ad-provision samba-dsdb-modules samba-vfs-modules winbind \
#     ldap-utils          (openssl is already in the base image; naming it upgrades libssl3)
#
# Usage:
#   samba-ad-throwaway.sh start        -> prints the instance dir (last stdout line); "$DIR/env" has exports
#   samba-ad-throwaway.sh stop DIR     -> kills samba by its PID, removes DIR (KEEP=1 keeps it)
#   samba-ad-throwaway.sh selftest     -> start, exercise bind/search/unicodePwd/lockout, stop
# Env knobs:
#   AD_REALM=CORP.EXAMPLE.TEST  AD_DOMAIN=CORP  AD_ADMIN_PASSWORD='Adm1n-Passw0rd!'
#   AD_USER_PASSWORD='Us3r-Passw0rd!'   (seeded users alice, bob, carol in OU=Staff)
#   AD_ALLOW_PLAIN_BIND=1   -> "ldap server require strong auth = no" (simple bind on plain 389)
#   AD_LOCKOUT_THRESHOLD=3  AD_NO_SEED=1  SAMBA_DEBUG=1
#   AD_IP=127.0.0.1  other loopback address (e.g. 127.0.0.2) to run several DCs side by side
set -euo pipefail

die() { echo "samba-ad-throwaway: $*" >&2; exit 1; }

make_tls() { # $1 = dir; CA + server cert with SAN localhost/127.0.0.1/::1 (rustls-friendly)
  local t=$1
  mkdir -p "$t"
  openssl req -x509 -new -nodes -newkey rsa:2048 -days 3 -subj "/CN=throwaway test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$t/ca.key" -out "$t/ca.pem" >/dev/null 2>&1
  openssl req -new -nodes -newkey rsa:2048 -subj "/CN=localhost" \
    -keyout "$t/key.pem" -out "$t/req.csr" >/dev/null 2>&1
  printf 'subjectAltName=DNS:localhost,DNS:%s,IP:127.0.0.1,IP:::1,IP:%s\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' \
    "${2:-localhost}" "${3:-127.0.0.1}" >"$t/ext.cnf"
  openssl x509 -req -in "$t/req.csr" -CA "$t/ca.pem" -CAkey "$t/ca.key" -CAcreateserial \
    -days 2 -extfile "$t/ext.cnf" -out "$t/cert.pem" >/dev/null 2>&1
  chmod 600 "$t/key.pem" "$t/ca.key"   # samba refuses a key file that is not 0600
}

cmd_start() {
  command -v samba >/dev/null || die "samba not installed"
  local realm=${AD_REALM:-CORP.EXAMPLE.TEST} domain=${AD_DOMAIN:-CORP}
  local admin_pw=${AD_ADMIN_PASSWORD:-Adm1n-Passw0rd!} user_pw=${AD_USER_PASSWORD:-Us3r-Passw0rd!}
  local dnsdom base ip=${AD_IP:-127.0.0.1} ifaces
  if [ "$ip" = 127.0.0.1 ]; then ifaces=lo; else ifaces="$ip/8"; fi
  dnsdom=$(echo "$realm" | tr 'A-Z' 'a-z')
  base="DC=${dnsdom//./,DC=}"

  if ss -ltn 2>/dev/null | grep -qF -e "$ip:389 " -e "$ip:636 "; then
    die "$ip:389/636 already in use (only one Samba DC per address; use AD_IP=127.0.0.2 etc.)"
  fi

  local dir; dir=$(mktemp -d /tmp/sambaad.XXXXXX)
  mkdir -p "$dir/run" "$dir/log"
  make_tls "$dir/tls" "dc1.$dnsdom" "$ip"


  samba-tool domain provision --use-rfc2307 \
    --realm="$realm" --domain="$domain" --server-role=dc --dns-backend=NONE \
    --adminpass="$admin_pw" --targetdir="$dir" --host-name=dc1 --host-ip="$ip" \
    --option="interfaces = $ifaces" --option="bind interfaces only = yes" \
    --option="server services = ldap, cldap" \
    --option="pid directory = $dir/run" --option="ncalrpc dir = $dir/run/ncalrpc" \
    --option="winbindd socket directory = $dir/run/winbindd" \
    --option="ntp signd socket directory = $dir/run/ntp_signd" \
    --option="log file = $dir/log/log.%m" --option="usershare path = $dir/usershares" \
    --option="tls enabled = yes" --option="tls keyfile = $dir/tls/key.pem" \
    --option="tls certfile = $dir/tls/cert.pem" --option="tls cafile = $dir/tls/ca.pem" \
    >"$dir/log/provision.log" 2>&1 \
    || { tail -30 "$dir/log/provision.log" >&2; die "provision failed (log kept in $dir)"; }

  local conf=$dir/etc/smb.conf
  if [ -n "${AD_ALLOW_PLAIN_BIND:-}" ]; then
    # provision silently drops this --option, so add it to [global] afterwards
    sed -i 's/^\[global\]$/[global]\n\tldap server require strong auth = no/' "$conf"
  fi
  # test-friendly policy: no min age / history, lockout after N bad passwords
  samba-tool domain passwordsettings set -s "$conf" --min-pwd-age=0 --history-length=0 \
    --account-lockout-threshold="${AD_LOCKOUT_THRESHOLD:-3}" --account-lockout-duration=30 \
    --reset-account-lockout-after=30 >>"$dir/log/provision.log" 2>&1

  setsid samba -F -M single --debug-stdout -d "${SAMBA_DEBUG:-1}" -s "$conf" \
    </dev/null >"$dir/log/samba.stdout" 2>&1 &
  local pid=$!
  echo "$pid" >"$dir/pid"

  local adm="CN=Administrator,CN=Users,$base" i
  for i in $(seq 1 150); do
    if LDAPTLS_CACERT=$dir/tls/ca.pem ldapsearch -x -H ldaps://$ip -D "$adm" -w "$admin_pw" \
         -b "" -s base -LLL dnsHostName >/dev/null 2>&1; then break; fi
    kill -0 "$pid" 2>/dev/null || { cat "$dir/log/samba.stdout" >&2; die "samba exited during startup"; }
    sleep 0.2
  done
  LDAPTLS_CACERT=$dir/tls/ca.pem ldapsearch -x -H ldaps://$ip -D "$adm" -w "$admin_pw" \
    -b "" -s base >/dev/null 2>&1 || { kill "$pid"; die "samba did not answer on ldaps://$ip"; }

  if [ -z "${AD_NO_SEED:-}" ]; then
    q() { printf '"%s"' "$1" | iconv -f UTF-8 -t UTF-16LE | base64 -w0; }
    {
      printf 'dn: OU=Staff,%s\nobjectClass: organizationalUnit\nou: Staff\n\n' "$base"
      printf 'dn: OU=Groups,%s\nobjectClass: organizationalUnit\nou: Groups\n\n' "$base"
      local n=10000 u uid given sn
      for u in alice:Alice:Anderson bob:Bob:Brown carol:Carol:Clark; do
        IFS=: read -r uid given sn <<<"$u"; n=$((n+1))
        cat <<EOF
dn: CN=$given $sn,OU=Staff,$base
objectClass: user
sAMAccountName: $uid
userPrincipalName: $uid@$dnsdom
givenName: $given
sn: $sn
displayName: $given $sn
mail: $uid@$dnsdom
uidNumber: $n
gidNumber: 100
loginShell: /bin/bash
unixHomeDirectory: /home/$uid
unicodePwd:: $(q "$user_pw")
userAccountControl: 512

EOF
      done
      cat <<EOF
dn: CN=Console Admins,OU=Groups,$base
objectClass: group
sAMAccountName: console-admins
member: CN=Alice Anderson,OU=Staff,$base

dn: CN=Developers,OU=Groups,$base
objectClass: group
sAMAccountName: developers
gidNumber: 20001
member: CN=Alice Anderson,OU=Staff,$base
member: CN=Bob Brown,OU=Staff,$base

EOF
    } >"$dir/seed.ldif"
    LDAPTLS_CACERT=$dir/tls/ca.pem ldapadd -x -H ldaps://$ip -D "$adm" -w "$admin_pw" \
      -f "$dir/seed.ldif" >"$dir/log/seed.log" 2>&1 \
      || { cat "$dir/log/seed.log" >&2; kill "$pid"; die "seeding failed (dir $dir kept)"; }
  fi

  cat >"$dir/env" <<EOF
export SAMBA_DIR='$dir'
export SAMBA_PID=$pid
export SAMBA_CONF='$conf'
export AD_LDAP_URI='ldap://$ip'
export AD_LDAPS_URI='ldaps://$ip'
export AD_CA_CERT='$dir/tls/ca.pem'
export AD_REALM='$realm'
export AD_DOMAIN='$domain'
export AD_BASE_DN='$base'
export AD_ADMIN_DN='$adm'
export AD_ADMIN_UPN='Administrator@$dnsdom'
export AD_ADMIN_PASSWORD='$admin_pw'
export AD_USER_PASSWORD='$user_pw'
EOF
  echo "samba AD DC pid $pid on $ifaces ports 389 636 3268 3269 (dir $dir)" >&2
  echo "$dir"
}

cmd_stop() {
  local dir=${1:-}
  [ -n "$dir" ] && [ -f "$dir/pid" ] || die "usage: $0 stop DIR"
  local pid; pid=$(cat "$dir/pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    local i
    for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && { echo "samba $pid still alive, KILL" >&2; kill -KILL "$pid"; }
  fi
  # any leftover children in samba's own session (setsid made sid == pid)
  local left; left=$(pgrep -s "$pid" || true)
  [ -n "$left" ] && { echo "killing leftover samba children: $left" >&2; kill -KILL $left || true; }
  [ -z "${KEEP:-}" ] && rm -rf "$dir"
  echo "stopped samba $pid" >&2
}

cmd_selftest() {
  local dir; dir=$(cmd_start)
  . "$dir/env"
  trap 'cmd_stop "$SAMBA_DIR"' EXIT
  export LDAPTLS_CACERT=$AD_CA_CERT   # verified TLS (cert has SAN IP:127.0.0.1)
  local H=$AD_LDAPS_URI B=$AD_BASE_DN U="CN=Carol Clark,OU=Staff,$AD_BASE_DN"
  q() { printf '"%s"' "$1" | iconv -f UTF-8 -t UTF-16LE | base64 -w0; }
  canbind() { ldapsearch -x -H "$H" -D "$1" -w "$2" -b "" -s base dnsHostName >/dev/null 2>&1; }
  set -x
  samba-tool user create dave 'Dav3-Passw0rd!' -s "$SAMBA_CONF" --given-name=Dave --surname=Doe \
    --userou=OU=Staff --nis-domain=corp --uid-number=10010 --gid-number=100 --login-shell=/bin/bash --unix-home=/home/dave
  samba-tool group addmembers developers dave -s "$SAMBA_CONF"
  ldapsearch -x -H "$H" -D "$AD_ADMIN_UPN" -w "$AD_ADMIN_PASSWORD" -b "$B" -LLL \
    '(&(objectCategory=person)(objectClass=user)(sAMAccountName=*))' sAMAccountName memberOf uidNumber userAccountControl
  ldapsearch -x -ZZ -H "$AD_LDAP_URI" -D "$AD_ADMIN_UPN" -w "$AD_ADMIN_PASSWORD" -b "OU=Groups,$B" -LLL member
  canbind "alice@${AD_REALM,,}" "$AD_USER_PASSWORD"
  canbind "$AD_DOMAIN\\bob" "$AD_USER_PASSWORD"
  # admin password reset: replace unicodePwd (quoted, UTF-16LE, base64) - needs TLS
  printf 'dn: %s\nchangetype: modify\nreplace: unicodePwd\nunicodePwd:: %s\n' "$U" "$(q 'Res3t-by-Admin!')" \
    | ldapmodify -x -H "$H" -D "$AD_ADMIN_DN" -w "$AD_ADMIN_PASSWORD"
  canbind "$U" 'Res3t-by-Admin!'
  # self-service change: delete old + add new in one modify
  printf 'dn: %s\nchangetype: modify\ndelete: unicodePwd\nunicodePwd:: %s\n-\nadd: unicodePwd\nunicodePwd:: %s\n-\n' \
    "$U" "$(q 'Res3t-by-Admin!')" "$(q 'S3lf-Chosen-Pw!')" | ldapmodify -x -H "$H" -D "$U" -w 'Res3t-by-Admin!'
  canbind "$U" 'S3lf-Chosen-Pw!'
  # lockout after 3 bad binds, then unlock with lockoutTime=0
  for i in 1 2 3; do if canbind "$U" wrong; then die "bad password accepted"; fi; done
  ldapsearch -x -H "$H" -D "$AD_ADMIN_DN" -w "$AD_ADMIN_PASSWORD" -b "$U" -s base -LLL lockoutTime badPwdCount msDS-User-Account-Control-Computed
  if canbind "$U" 'S3lf-Chosen-Pw!'; then die "locked account could bind"; fi
  printf 'dn: %s\nchangetype: modify\nreplace: lockoutTime\nlockoutTime: 0\n' "$U" \
    | ldapmodify -x -H "$H" -D "$AD_ADMIN_DN" -w "$AD_ADMIN_PASSWORD"
  canbind "$U" 'S3lf-Chosen-Pw!'
  set +x
  echo "SELFTEST OK"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) shift; cmd_stop "$@" ;;
  selftest) cmd_selftest ;;
  *) die "usage: $0 {start | stop DIR | selftest}" ;;
esac
