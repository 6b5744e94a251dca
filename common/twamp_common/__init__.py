"""Sans-I/O TWAMP: wire formats, timestamps, crypto, control state machines and statistics.

The modules hold one concern each: ``codes`` (registered numbers), ``errors`` (the exception
hierarchy), ``timestamp`` (NTP time and Error Estimate), ``control_messages`` and
``test_packets`` (wire formats), ``crypto`` (keys, token, control stream cipher, test packet
protection), ``control`` (the Control-Client and Server state machines), ``stats`` (round-trip
statistics) and ``clock`` (the kernel's clock state, read by the drivers).  ``service`` is not
protocol: it is what the two daemons share with systemd (sd_notify, the journal, the
configuration error), here because this is the one package both depend on.
"""
