# Sourced by the IMAP benchmark and the compliance run: a private Postfix + Dovecot under
# "$W/srv" (users $USERS, password "secret") and the account alice@example.test under
# "$W/alice", with a meshmail configuration "$W/meshmail.toml" whose IMAP listener is on $PORT
# in front of Dovecot's IMAP on $IMAP (STARTTLS with the test CA). Needs W, BIN; sets BASE,
# IMAP, PORT. Extra lines for the [imap] section may be given in IMAP_EXTRA.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened"; exit 1; }

BASE=$(( ($(free_port) / 100) * 100 ))
[ "$BASE" -lt 20000 ] && BASE=$((BASE + 20000))
bash integration/servers/start.sh "$W/srv" "$BASE" >"$W/servers.log" 2>&1
IMAP=$((BASE + 43))

"$BIN" --home "$W/alice" init --address alice@example.test >/dev/null
PORT=$(free_port)
cat > "$W/meshmail.toml" <<TOML
home = "$W/alice"
upstream_user = "alice"
[imap]
listen = "127.0.0.1:$PORT"
upstream = "127.0.0.1:$IMAP"
upstream_tls = "starttls"
upstream_ca = "$W/srv/tls/ca.pem"
${IMAP_EXTRA:-}
TOML
