#!/usr/bin/env bash
# Writes small seed inputs into corpus/<target>/ (gitignored): one valid example of each
# kind of input, so the fuzzers start from real frames, keys and files instead of from
# nothing. Safe to run again; libFuzzer keeps whatever it learns beside them.
# The frames are proto::frame::encode output (4-byte length + bincode), written as hex.
set -euo pipefail
cd "$(dirname "$0")"

seed() { # TARGET NAME HEX
  mkdir -p "corpus/$1"
  printf '%b' "$(sed 's/../\\x&/g' <<<"$3")" >"corpus/$1/seed-$2"
}
text() { # TARGET NAME TEXT
  mkdir -p "corpus/$1"
  printf '%s' "$3" >"corpus/$1/seed-$2"
}

key=8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c
sig=194a924ce81dbac1864f17d07dfcd99c480c20df05008a4a0a8d9be2162b7a211a9e4a11d561bb83c3ffe37e5aea81078af38353e164978c2a743596ed836f0b

# frame_decode: Request, ServerMsg, PeerMsg and ChatPayload frames, and a two-frame stream.
seed frame_decode hello 0000000f00010c6e617474657220302e312e30
seed frame_decode register 0000002c0103616c6906736563726574$key
seed frame_decode login 0000008a0203616c6906736563726574${key}40${sig}02007f000001fba00f0100000000000000000000000000000001fba00f
seed frame_decode resume 000000600303616c69100707070707070707070707070707070740${sig}01007f000001fba00f
seed frame_decode lookup 0000000804066269616e6361
seed frame_decode who-then-watch 00000001050000000a0a01066269616e636100
seed frame_decode welcome 00000024000001090909090909090909090909090909090909090909090909090909090909090901
seed frame_decode granted 00000025000203616c691007070707070707070707070707070707fc80510100007f000001fba00f00
seed frame_decode refused 00000006000300010200
seed frame_decode found 000000460004066269616e6361${key}007f000001fba00f010100000000000000000000000000000001fba00f
seed frame_decode online 0000000a00060103616c69fb2c01
seed frame_decode error 0000000700080303626164
seed frame_decode room-members 0000000e0009056c6f6262790103616c6901
seed frame_decode presence 00000007010303616c6901
seed frame_decode connect 00000007000103616c6900
seed frame_decode accepted 0000000801066269616e6361
seed frame_decode connect-refused 000000020206
seed frame_decode key-share 0000006203050505050505050505050505050505050505050505050505050505050505050540$sig
seed frame_decode sealed 00000017040314aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
seed frame_decode text 0000001900010568656c6c6ffd0068e5cf8b01000001056c6f62627901
seed frame_decode ack-then-bye 0000000201010000000102
rep() { printf "%0.s$1" $(seq "$2"); } # HEX COUNT: HEX repeated COUNT times
seed frame_decode sealed-mail "00000055$(rep 05 32)$(rep 06 32)14$(rep aa 20)"

# names_and_keys: a user name, a password, a key, a fingerprint, a real certificate.
text names_and_keys user "bianca_1"
text names_and_keys password "correct horse"
text names_and_keys key "$key"
text names_and_keys fingerprint "3475 0F98 BD59 FCFC 946D A45A AABE 933B E154 A4B5 094E 1C4A BF42 8665 05F3 C97E"
seed names_and_keys cert 308201173081caa003020102021434750f98bd59fcfc946da45aaabe933be154a4b5300506032b65703021311f301d06035504030c16726367656e2073656c66207369676e656420636572743020170d3234303130313030303030305a180f34303030303130313030303030305a3021311f301d06035504030c16726367656e2073656c66207369676e65642063657274302a300506032b6570032100${key}a3123010300e0603551d11040730058203616c69300506032b657003410095d9fe92560b94c52a02c550a50b127c40c9f8c20a1f8c91880a6296e736d04a0e8e72a9eff79efc75f3859e0d6b79d968ff7eef74262a2c923486d9c800fb03

# config_parsers: a config.toml and a pin file.
text config_parsers config $'user = "ali"\ndirectory = "dir.example:7878"\nlisten = "0.0.0.0:0"\n'
text config_parsers pins $'# pinned on first contact\nbianca '"$key"$'\n[::1]:7878 '"$key"$'\n'

# pin_file: a known_peers file, one with the injected line, one with a duplicate.
text pin_file peers $'# pinned on first contact\nali '"$key"$'\nbianca '"$key"$'\n'
text pin_file injected $'zzz '"$key"$'\nali '"$key"$'\n'
text pin_file duplicate $'ali '"$key"$'\nali '"$key"$'\n'
text pin_file directories $'[::1]:7878 '"$key"$'\ndir.example.org '"$key"$'\n'

# wire_names: Presence and RoomMembers events/replies, a bare name, a name with a line break.
seed wire_names presence 00000007010303616c6901
seed wire_names room-members 0000000e0009056c6f6262790103616c6901
seed wire_names connect 00000007000103616c6900
text wire_names name "bianca_1"
text wire_names injected $'zzz\nali'
