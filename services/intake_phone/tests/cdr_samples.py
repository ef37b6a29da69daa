"""Master.csv lines as Asterisk's cdr_csv writes them (text quoted, integers bare, an empty
answer time as an empty unquoted field), for the CDR tests."""


def q(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def cdr_line(*, src="13812345678", dst="4008001234", dcontext="from-trunk", clid=None, channel="SIP/trunk-00000001",
             dstchannel="", lastapp="Dial", lastdata="SIP/8001,30", start="2026-11-20 09:00:00", answer="",
             end="2026-11-20 09:00:40", duration=40, billsec=0, disposition="NO ANSWER", amaflags="DOCUMENTATION",
             uniqueid="1700000000.1", userfield=None, new_columns=None, accountcode="") -> str:
    clid = clid if clid is not None else f'"张伟" <{src}>'
    fields = [q(accountcode), q(src), q(dst), q(dcontext), q(clid), q(channel), q(dstchannel), q(lastapp),
              q(lastdata), q(start), q(answer) if answer else "", q(end), str(duration), str(billsec),
              q(disposition), q(amaflags), q(uniqueid)]
    if userfield is not None:
        fields.append(q(userfield))
    if new_columns is not None:
        fields.extend([q(new_columns[0]), q(new_columns[1]), str(new_columns[2])])
    return ",".join(fields)


def master_csv(*lines: str) -> str:
    return "".join(line + "\n" for line in lines)


# A morning at the hotline: a caller who keeps trying (3 missed calls in 20 minutes, the middle
# one given up in the queue), an answered call, a voicemail, an IVR-only call, an internal call,
# an outbound call, and one call rung at two agents (two rows, one uniqueid) that one answered.
MORNING = master_csv(
    cdr_line(uniqueid="1700000000.1", start="2026-11-20 09:00:00", end="2026-11-20 09:00:40"),
    cdr_line(uniqueid="1700000000.2", lastapp="Queue", lastdata="support,t,,,300", disposition="ANSWERED",
             start="2026-11-20 09:10:00", answer="2026-11-20 09:10:01", end="2026-11-20 09:12:00", duration=120,
             billsec=119),
    cdr_line(uniqueid="1700000000.3", disposition="BUSY", start="2026-11-20 09:20:00", end="2026-11-20 09:20:05"),
    cdr_line(uniqueid="1700000000.4", src="13900001111", dstchannel="SIP/8001-0000000a", disposition="ANSWERED",
             start="2026-11-20 09:30:00", answer="2026-11-20 09:30:05", end="2026-11-20 09:35:00"),
    cdr_line(uniqueid="1700000000.5", src="15900002222", lastapp="VoiceMail", lastdata="8001@default,u",
             disposition="ANSWERED", start="2026-11-20 09:40:00", answer="2026-11-20 09:40:20",
             end="2026-11-20 09:41:00"),
    cdr_line(uniqueid="1700000000.6", src="18600003333", lastapp="Playback", lastdata="opening-hours",
             disposition="ANSWERED", start="2026-11-20 09:45:00", answer="2026-11-20 09:45:00",
             end="2026-11-20 09:45:30"),
    cdr_line(uniqueid="1700000000.7", src="8002", dst="8001", dcontext="from-internal", disposition="ANSWERED",
             dstchannel="SIP/8001-0000000b", start="2026-11-20 09:50:00", answer="2026-11-20 09:50:03",
             end="2026-11-20 09:52:00"),
    cdr_line(uniqueid="1700000000.8", src="8001", dst="13812345678", dcontext="from-internal",
             channel="SIP/8001-0000000c", start="2026-11-20 09:55:00", end="2026-11-20 09:55:30"),
    cdr_line(uniqueid="1700000000.9", src="13700004444", dstchannel="SIP/8002-0000000d", disposition="NO ANSWER",
             lastapp="Queue", lastdata="sales", start="2026-11-20 10:00:00", end="2026-11-20 10:00:20"),
    cdr_line(uniqueid="1700000000.9", src="13700004444", dstchannel="SIP/8003-0000000e", disposition="ANSWERED",
             lastapp="Queue", lastdata="sales", start="2026-11-20 10:00:00", answer="2026-11-20 10:00:15",
             end="2026-11-20 10:04:00"),
)
