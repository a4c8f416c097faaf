complete -c ferry -s c -l command -d 'Commands to run, separated by `;`, then exit (at the first failure, with its status)' -r
complete -c ferry -l config -d 'Read the defaults from this file instead (/dev/null: none)' -r -F
complete -c ferry -l password-file -d 'Read the password from this file\'s first line (FERRY_PASSWORD also works)' -r -F
complete -c ferry -l timeout-secs -d 'Seconds to wait for the server before giving up [default: 30]' -r
complete -c ferry -l ca-file -d 'Trust only the CA certificates in this PEM file (e.g. a self-signed server\'s cert.pem)' -r -F
complete -c ferry -s P -l parallel -d 'Connections mget, mput and mirror use at once (their -P N overrides it) [default: 1]' -r
complete -c ferry -l retries -d 'Times a transfer that failed for a passing reason (reset, timeout, 421, 425, 426, 450) is tried again, resuming where it stopped [default: 3]' -r
complete -c ferry -l active -d 'Active mode: the server connects back (PORT/EPRT) instead of passive EPSV/PASV'
complete -c ferry -l passive -d 'Passive mode (EPSV/PASV), whatever the configuration file says'
complete -c ferry -s q -l quiet -d 'Quiet: print only what was asked for (listings, sizes, errors), no greeting, confirmations or transfer summaries'
complete -c ferry -l tls -d 'FTPS: AUTH TLS after the greeting, then encrypted data connections (RFC 4217)'
complete -c ferry -l implicit-tls -d 'Implicit FTPS: TLS from the first byte (servers on port 990)'
complete -c ferry -l no-tls -d 'Plain FTP, whatever the configuration file says'
complete -c ferry -l insecure -d 'Do not check the server\'s certificate at all (encrypted, but not authenticated)'
complete -c ferry -s h -l help -d 'Print help'
complete -c ferry -s V -l version -d 'Print version'
